from gpucloud.cli import main

raise SystemExit(main())
