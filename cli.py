"""Run the dcn-deploy CLI from a source checkout: ``python cli.py --help`` (same as the ``dcn-deploy`` command)."""
from dcn_deploy.cli import main

if __name__ == "__main__":
    main()
