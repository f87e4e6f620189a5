"""``python -m thinklens`` (what ``torchrun -m thinklens COMMAND`` runs): the ``thinklens`` command."""
import sys

from thinklens.cli.main import main
from thinklens.distributed import exit_launch

code = main()
exit_launch(code)  # a rank of a torchrun launch ends here (see exit_launch); one process goes on to sys.exit
sys.exit(code)
