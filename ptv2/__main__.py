from ptv2.cli import main

raise SystemExit(main())
