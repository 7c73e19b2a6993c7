import sys

try:
    from ptv2.cli import main

    code = main()
except ModuleNotFoundError as e:  # `python -m ptv2` under a Python without ptv2's packages: one line, not a traceback
    from ptv2.procenv import missing_package

    if missing_package(e) is None:
        raise
    print(missing_package(e), file=sys.stderr)
    code = 2
raise SystemExit(code)
