"""kyara: one image of an anime character → a character model you can drive in real time.

Public API: Pose, Teacher, Student, Character, distill, load_character.
"""
__version__ = "0.1.0"

from kyara.pose import Pose, PRESETS  # noqa: E402,F401


def __getattr__(name):  # lazy: importing kyara must not import every model
    if name == "Teacher":
        from kyara.teacher import Teacher
        return Teacher
    if name == "Student":
        from kyara.student import Student
        return Student
    if name in ("Character", "load_character"):
        from kyara import character
        return getattr(character, name)
    if name == "distill":
        from kyara.distill import distill
        return distill
    raise AttributeError(name)
