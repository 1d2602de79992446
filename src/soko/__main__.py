from soko.cli import main

raise SystemExit(main())
