"""Entry point: ``python pipelines/augment.py --runner DirectRunner --task sst2 ...`` (see pipelines.corpus).

Run as a script, Python puts this file's folder (``pipelines/``) first on ``sys.path``, where this
very file would shadow the ``augment`` engine package (``import augment`` would import it). So the
folder is swapped for the project root before anything else is imported.
"""
import os
import sys

if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

    from pipelines.corpus import main

    main()
