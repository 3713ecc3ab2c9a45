from oanet.cli import main

raise SystemExit(main())
