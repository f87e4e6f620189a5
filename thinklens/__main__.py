"""``python -m thinklens`` (what ``torchrun -m thinklens COMMAND`` runs): the ``thinklens`` command."""
import sys

from thinklens.cli.main import main

sys.exit(main())
