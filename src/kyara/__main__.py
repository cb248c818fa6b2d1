from kyara.cli import main

raise SystemExit(main())
