from cxm_cli.cli import main

raise SystemExit(main())
