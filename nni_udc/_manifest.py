"""Keep NNI's experiment manifest inside a run's output directory instead of the user's home.

NNI 3.0 records every experiment it starts, in-process ones included, in ``~/nni-experiments/.experiment``
(``NasExperiment._start_without_nni_manager`` → ``nni.tools.nnictl.config_utils.Experiments()``), and never
removes the entry: a day of searches leaves a hundred entries there. ``Experiments`` takes its directory as
the default value of ``home_dir``, bound when NNI is imported (``nnictl.constants.NNI_HOME_DIR``), and no
setting of ``NasExperimentConfig`` reaches it; :func:`manifest_in` swaps that default for the duration of a
run, so every experiment of the run (search, shared supernet, multi-trial) records itself in the run's
directory. ``nnictl`` itself, which reads the global manifest, is not affected.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["manifest_in"]


@contextmanager
def manifest_in(directory: str | Path) -> Iterator[Path]:
    """Within the block, NNI writes its experiment manifest (``.experiment``) to ``directory``."""
    from nni.tools.nnictl.config_utils import Experiments

    directory = Path(directory).resolve()
    init = Experiments.__init__
    saved = init.__defaults__
    init.__defaults__ = (str(directory),)
    try:
        yield directory
    finally:
        init.__defaults__ = saved
