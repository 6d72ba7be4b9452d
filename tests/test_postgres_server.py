from __future__ import annotations

import optuna


def test_rdb_storage_on_postgres_stores_trials(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg2://optuna@127.0.0.1:")
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        study = optuna.create_study(study_name="pg-smoke", storage=storage, direction="minimize",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=3)
        written = [(t.number, t.params["x"], t.value) for t in study.trials]
    finally:
        storage.engine.dispose()

    reloaded = optuna.storages.RDBStorage(postgres_url)  # a fresh engine: read back from the server
    try:
        again = optuna.load_study(study_name="pg-smoke", storage=reloaded)
        trials = again.get_trials(deepcopy=False)
        assert len(trials) == 3
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert [(t.number, t.params["x"], t.value) for t in trials] == written
        assert again.best_value == min(v for _, _, v in written)
    finally:
        reloaded.engine.dispose()
