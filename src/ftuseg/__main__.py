from ftuseg.cli import main

raise SystemExit(main())
