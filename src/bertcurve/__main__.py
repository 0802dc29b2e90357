from bertcurve.cli import main

raise SystemExit(main())
