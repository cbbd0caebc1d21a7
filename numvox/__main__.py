from numvox.cli import main

raise SystemExit(main())
