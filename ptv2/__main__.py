from ptv2.procenv import exit_2_on_missing_package

with exit_2_on_missing_package():  # `python -m ptv2` under a Python without ptv2's packages: one line
    from ptv2.cli import main

    code = main()
raise SystemExit(code)
