"""Each job's status file (``DIR/<name>/status.json``) and the farm's status as text, JSON and a page.

A job is *queued* (no status yet, or written by ``kyara farm run`` before it starts), *running* (a
worker wrote its PID and host), *done* or *failed* (with a one-line error). A running job's current
PSNR and minutes come from its distillation log (``DIR/<name>/work/log.jsonl``, kyara.distill's);
the ETA is the time budget left (``--minutes`` jobs) or the examples left at the logged rate.
"""
from __future__ import annotations

import html
import json
import os
import socket
import time
from dataclasses import asdict, dataclass

from kyara.farm.outdir import FarmDir
from kyara.farm.table import Job, read_table

STATES = ("queued", "running", "done", "failed")
STATUS_NAME = "status.json"
WORK_NAME = "work"
LOG_NAME = "log.jsonl"   # kyara.distill.checkpoint.LOG_NAME (read here without importing torch)


def status_path(name: str) -> str:
    return f"{name}/{STATUS_NAME}"


def read_status(farm: FarmDir, name: str) -> dict | None:
    """The job's status record, or None when it has none (or it is unreadable: treated as queued)."""
    try:
        data = json.loads(farm.read_bytes(status_path(name)))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES else None


def write_status(farm: FarmDir, name: str, state: str, **fields) -> dict:
    record = {"state": state, "updated": time.time(), **fields}
    farm.write_bytes(status_path(name), (json.dumps(record) + "\n").encode())
    return record


def last_log_record(farm: FarmDir, name: str) -> dict | None:
    """The last complete line of the job's distillation log (None if there is none yet)."""
    try:
        text = farm.read_bytes(f"{name}/{WORK_NAME}/{LOG_NAME}").decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:   # a line being appended right now
            continue
        if isinstance(record, dict):
            return record
    return None


@dataclass(frozen=True)
class JobStatus:
    name: str
    state: str
    attempt: int | None = None
    host: str | None = None
    pid: int | None = None
    psnr: float | None = None          # held-out PSNR (dB): the distiller's progress PSNR, or the final eval's
    minutes: float | None = None       # distillation minutes so far
    examples: int | None = None
    eta_minutes: float | None = None   # distillation time left (evaluation and stages not counted)
    error: str | None = None
    outputs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()        # e.g. the export stage's caveat for a straight-colour student
    worker_alive: bool | None = None   # running on this host: whether its PID still exists (None: elsewhere)

    def as_dict(self) -> dict:
        return {**asdict(self), "outputs": list(self.outputs), "notes": list(self.notes)}


def eta_minutes(job: Job, record: dict | None) -> float | None:
    if record is None:
        return job.minutes
    done_min = float(record.get("minutes", 0.0))
    if job.minutes:
        return max(0.0, job.minutes - done_min)
    total = job.distill_config.examples
    examples = int(record.get("examples", 0))
    if not total or examples <= 0 or done_min <= 0:
        return None
    return max(0.0, done_min / examples * (total - examples))


def job_status(farm: FarmDir, job: Job) -> JobStatus:
    status = read_status(farm, job.name) or {"state": "queued"}
    state = status["state"]
    record = last_log_record(farm, job.name) if state != "failed" or status.get("attempt") else None
    common = dict(name=job.name, state=state, attempt=status.get("attempt"), host=status.get("host"),
                  pid=status.get("pid"), error=status.get("error"))
    if state == "done":
        result = status.get("result", {})
        return JobStatus(**common, psnr=result.get("psnr"), minutes=result.get("minutes"),
                         examples=result.get("examples"), eta_minutes=0.0, outputs=tuple(result.get("outputs", ())),
                         notes=tuple(result.get("notes", ())))
    psnr = record.get("psnr") if record else None
    if state == "running" and status.get("host") == socket.gethostname() and status.get("pid"):
        common["worker_alive"] = _pid_alive(int(status["pid"]))
    return JobStatus(**common, psnr=psnr if isinstance(psnr, (int, float)) and psnr == psnr else None,
                     minutes=record.get("minutes") if record else None,
                     examples=record.get("examples") if record else None,
                     eta_minutes=eta_minutes(job, record) if state in ("queued", "running") else None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, another user's
        return True
    return True


def running_detail(j: JobStatus) -> str:
    text = f"attempt {j.attempt} on {j.host} (pid {j.pid})"
    if j.worker_alive is False:
        text += ": that process is gone (Ray retries the job, or run the farm again if `kyara farm run` stopped)"
    return text


def farm_status(location: str) -> list[JobStatus]:
    farm = FarmDir(location)
    return [job_status(farm, job) for job in read_table(farm).values()]


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    return {s: sum(1 for j in statuses if j.state == s) for s in STATES}


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def status_text(location: str, statuses: list[JobStatus]) -> str:
    """A fixed-width table, one line per character, with a summary line first."""
    c = counts(statuses)
    lines = [f"{location}: {len(statuses)} character(s): " + ", ".join(f"{c[s]} {s}" for s in STATES)]
    width = max([4] + [len(j.name) for j in statuses])
    lines.append(f"{'name':<{width}}  {'state':<8} {'PSNR dB':>7} {'min':>6} {'examples':>9} {'ETA min':>7}  detail")
    for j in statuses:
        detail = j.error or (running_detail(j) if j.state == "running" else "")
        if j.state == "done":
            detail = ", ".join(j.outputs)
        lines.append(f"{j.name:<{width}}  {j.state:<8} {_fmt(j.psnr, '7.2f'):>7} {_fmt(j.minutes, '6.1f'):>6} "
                     f"{_fmt(j.examples, '9,d'):>9} {_fmt(j.eta_minutes, '7.1f'):>7}  {detail}")
    return "\n".join(lines)


def status_json(location: str, statuses: list[JobStatus]) -> str:
    return json.dumps({"farm": location, "counts": counts(statuses), "jobs": [j.as_dict() for j in statuses]},
                      indent=1)


COLOURS = {"queued": "#8a8f98", "running": "#2f6fdb", "done": "#1f9d55", "failed": "#d64545"}


def status_html(location: str, statuses: list[JobStatus], refresh_s: int = 30) -> str:
    """A self-contained page (no script, no external resource) that reloads itself every refresh_s
    seconds while any job is queued or running."""
    c = counts(statuses)
    total = max(1, len(statuses))
    e = html.escape
    bar = "".join(f'<span style="width:{100 * c[s] / total:.2f}%;background:{COLOURS[s]}"></span>' for s in STATES)
    rows = []
    for j in statuses:
        detail = j.error or (running_detail(j) if j.state == "running" else ", ".join(j.outputs))
        rows.append(f'<tr><td>{e(j.name)}</td><td><b style="color:{COLOURS[j.state]}">{j.state}</b></td>'
                    f'<td class="n">{_fmt(j.psnr, ".2f")}</td><td class="n">{_fmt(j.minutes, ".1f")}</td>'
                    f'<td class="n">{_fmt(j.examples, ",d")}</td><td class="n">{_fmt(j.eta_minutes, ".1f")}</td>'
                    f'<td>{e(detail)}</td></tr>')
    active = c["queued"] + c["running"] > 0
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if active else ""
    summary = " · ".join(f'<b style="color:{COLOURS[s]}">{c[s]} {s}</b>' for s in STATES)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>kyara farm: {c['done']}/{len(statuses)} done</title>
<style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} h1{{font-size:1.3em}}
.bar{{display:flex;height:12px;border-radius:6px;overflow:hidden;background:#eee;margin:.6em 0 1.2em;max-width:60em}}
table{{border-collapse:collapse}} td,th{{padding:.3em .8em;border-bottom:1px solid #e4e4e4;text-align:left}} th{{white-space:nowrap}}
td.n,th.n{{text-align:right;font-variant-numeric:tabular-nums}} .small{{color:#777;font-size:.9em}}
</style></head><body>
<h1>kyara farm</h1><div class="small">{e(location)} · written {stamp}{' · reloads every %ds' % refresh_s if active else ''}</div>
<p>{len(statuses)} characters: {summary}</p><div class="bar">{bar}</div>
<table><tr><th>character</th><th>state</th><th class="n">PSNR dB</th><th class="n">minutes</th>
<th class="n">examples</th><th class="n">ETA min</th><th>detail</th></tr>
{chr(10).join(rows)}
</table><p class="small">PSNR: held-out poses against the teacher (running: the distiller's progress figure;
done: DIR/NAME.eval.json). ETA: distillation time left, stages not counted.</p>
</body></html>
"""
