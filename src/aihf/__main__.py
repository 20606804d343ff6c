from aihf.cli import main

raise SystemExit(main())
