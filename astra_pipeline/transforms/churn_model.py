"""Churn model: train, evaluate, score and (de)serialise, with scikit-learn.

Pure: frames in, model and metrics out; no I/O, no Dagster, no Kafka, no DuckDB. The
artifact is bytes plus a content-hash version; where they are stored is the caller's
business.

Model: a scikit-learn ``Pipeline`` of median imputation (with missing-value indicators,
since "never purchased" is information), standardisation and an L2 logistic regression.
Logistic regression gives calibrated-enough probabilities for a ranked list and trains in
well under a second on hundreds of thousands of rows.

Population: rows of users active in the last ``active_within_days`` days (recency below
that). A user already silent for two weeks has, by the label's definition, nearly
churned; keeping them would inflate every metric without helping anyone act. Scoring
accepts any row, but the probabilities are meant for that population.

Evaluation is out of time: the labelled days are split at a date, the model is fit on the
earlier days and evaluated on the later ones (``eval_fraction`` of the distinct days,
at least one). The model returned is the one evaluated, so the recorded metrics describe
exactly the model that scores. The labels of the last training days look up to
``horizon`` days ahead, into the evaluation period: the usual out-of-time setup without
purging (features never overlap, labels may).

Threshold: the probability that maximises F1 on the training rows (chosen without looking
at the evaluation rows); precision and recall are reported at that threshold on the
evaluation rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import pickle
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

from astra_pipeline.transforms.churn import USER_CHURN_SCHEMA

FEATURE_COLUMNS = tuple(
    name for name in USER_CHURN_SCHEMA.names() if name not in ("user_id", "as_of_day")
)
"""Model inputs: every feature of :func:`user_churn_features`, in schema order."""

ACTIVE_WITHIN_DAYS = 7
ARTIFACT_FORMAT = "astra-churn-model/1"

SCORE_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "as_of_day": pl.Date(),
        "churn_probability": pl.Float64(),
        "churn_predicted": pl.Boolean(),
    }
)


@dataclass(frozen=True)
class ChurnModel:
    """A fitted pipeline and what is needed to apply it the same way again."""

    pipeline: Pipeline
    features: tuple[str, ...]
    threshold: float
    trained_through: dt.date
    """The last as-of day of the training rows."""


@dataclass(frozen=True)
class ChurnMetrics:
    """Out-of-time evaluation of a trained model. ``auc`` is None when the evaluation
    days hold only one class (AUC is undefined)."""

    auc: float | None
    precision: float
    recall: float
    threshold: float
    training_rows: int
    evaluation_rows: int
    training_positive_rate: float
    evaluation_positive_rate: float
    train_first_day: dt.date
    train_last_day: dt.date
    eval_first_day: dt.date
    eval_last_day: dt.date

    def as_dict(self) -> dict[str, Any]:
        """Plain values (dates as ISO strings) for metadata and JSON."""
        return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SerializedModel:
    payload: bytes
    version: str
    """``churn-<first 16 hex of sha256(payload)>``: same bytes, same version."""


class ModelIntegrityError(ValueError):
    """A model artifact whose bytes do not match its version."""


FloatMatrix = npt.NDArray[np.float64]


def train_churn_model(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    seed: int = 0,
    *,
    eval_fraction: float = 0.25,
    active_within_days: int = ACTIVE_WITHIN_DAYS,
) -> tuple[ChurnModel, ChurnMetrics]:
    """Fit on the earlier labelled days, evaluate on the later ones (see module doc).

    ``features`` are rows of :func:`user_churn_features` for several days, ``labels``
    rows of :func:`churn_label` for (some of) the same days; rows join on (user_id,
    as_of_day) and rows without a label are left out. ``seed`` fixes the solver's
    randomness (the default solver is deterministic; the seed is kept so that a change
    of estimator stays reproducible).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError("eval_fraction must be within (0, 1)")
    rows = (
        features.join(
            labels.select("user_id", "as_of_day", "churned"),
            on=["user_id", "as_of_day"],
            how="inner",
        )
        .filter(pl.col("churned").is_not_null())
        .filter(pl.col("days_since_last_event") < active_within_days)
        .sort("as_of_day", "user_id")
    )
    days = rows["as_of_day"].unique().sort().to_list()
    if len(days) < 2:
        raise ValueError("need labelled rows on at least two days for an out-of-time split")
    n_eval = min(len(days) - 1, max(1, round(len(days) * eval_fraction)))
    split = days[-n_eval]
    train = rows.filter(pl.col("as_of_day") < split)
    test = rows.filter(pl.col("as_of_day") >= split)
    y_train = train["churned"].to_numpy().astype(np.int64)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training days hold only one class; cannot fit a classifier")

    # scikit-learn is imported here, not at module level: it takes about a second to
    # import, and every Dagster run (ingest, windows refresh) loads this module.
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=1.0, max_iter=1000, random_state=seed)),
        ]
    )
    pipeline.fit(_matrix(train, FEATURE_COLUMNS), y_train)
    threshold = _best_f1_threshold(
        y_train, pipeline.predict_proba(_matrix(train, FEATURE_COLUMNS))[:, 1]
    )
    model = ChurnModel(pipeline, FEATURE_COLUMNS, threshold, days[-n_eval - 1])

    y_test = test["churned"].to_numpy().astype(np.int64)
    p_test = pipeline.predict_proba(_matrix(test, FEATURE_COLUMNS))[:, 1]
    predicted = (p_test >= threshold).astype(np.int64)
    auc = float(roc_auc_score(y_test, p_test)) if len(np.unique(y_test)) == 2 else None
    metrics = ChurnMetrics(
        auc=auc,
        precision=float(precision_score(y_test, predicted, zero_division=0.0)),
        recall=float(recall_score(y_test, predicted, zero_division=0.0)),
        threshold=threshold,
        training_rows=train.height,
        evaluation_rows=test.height,
        training_positive_rate=float(y_train.mean()),
        evaluation_positive_rate=float(y_test.mean()),
        train_first_day=days[0],
        train_last_day=days[-n_eval - 1],
        eval_first_day=split,
        eval_last_day=days[-1],
    )
    return model, metrics


def score_churn(model: ChurnModel, features: pl.DataFrame) -> pl.DataFrame:
    """Churn probability in [0, 1] per row of ``features`` (schema :data:`SCORE_SCHEMA`,
    sorted by as_of_day, user_id); ``churn_predicted`` is probability >= the model's
    threshold."""
    rows = features.sort("as_of_day", "user_id")
    if rows.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    probability = model.pipeline.predict_proba(_matrix(rows, model.features))[:, 1]
    return rows.select("user_id", "as_of_day").with_columns(
        pl.Series("churn_probability", probability, dtype=pl.Float64),
        pl.Series("churn_predicted", probability >= model.threshold, dtype=pl.Boolean),
    )


def serialize_model(model: ChurnModel) -> SerializedModel:
    """The model as bytes (pickle, with a format tag) and its content-hash version."""
    buffer = io.BytesIO()
    pickle.dump((ARTIFACT_FORMAT, model), buffer, protocol=5)
    payload = buffer.getvalue()
    return SerializedModel(payload, _version(payload))


def deserialize_model(payload: bytes, expected_version: str | None = None) -> ChurnModel:
    """The model back from :func:`serialize_model` bytes.

    The bytes are checked against ``expected_version`` (when given) *before* they are
    unpickled. Pickle runs code while loading: only load artifacts this pipeline wrote,
    from its own store; the version check guards against corruption and mix-ups, it is
    not a signature.
    """
    if expected_version is not None and _version(payload) != expected_version:
        raise ModelIntegrityError(
            f"model artifact hashes to {_version(payload)}, expected {expected_version}"
        )
    loaded = pickle.loads(payload)  # noqa: S301 - our own artifact, integrity-checked
    if (
        not isinstance(loaded, tuple)
        or len(loaded) != 2
        or loaded[0] != ARTIFACT_FORMAT
        or not isinstance(loaded[1], ChurnModel)
    ):
        raise ModelIntegrityError(f"not a {ARTIFACT_FORMAT} artifact")
    model: ChurnModel = loaded[1]
    return model


def _version(payload: bytes) -> str:
    return "churn-" + hashlib.sha256(payload).hexdigest()[:16]


def _matrix(frame: pl.DataFrame, columns: tuple[str, ...]) -> FloatMatrix:
    """Features as a float matrix with NaN for null (what the imputer expects)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"features lack columns: {', '.join(missing)}")
    matrix = frame.select(pl.col(list(columns)).cast(pl.Float64)).to_numpy()
    return np.asarray(matrix, dtype=np.float64)


def _best_f1_threshold(y: npt.NDArray[np.int64], p: FloatMatrix) -> float:
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # The curve has one more point than thresholds (recall 0 at the end): drop it.
    return float(thresholds[int(np.argmax(f1[:-1]))])
