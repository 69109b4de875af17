"""Feast definitions for the skyfeast quickstart.

The batch sources point at the offline copies skyfeast writes under the
primary provider's storage root (``data/aws/offline/<feature_view>``).
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

WINDOWS = ("1h", "24h", "7d")

user_features_source = FileSource(
    name="user_features_source",
    path="../data/aws/offline/user_features",
    timestamp_field="event_timestamp",
)

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[Field(name="user_id", dtype=Int64)]
    + [
        Field(name=f"{stat}_{w}", dtype=dtype)
        for w in WINDOWS
        for stat, dtype in (("events", Int64), ("amount_sum", Float64), ("amount_mean", Float64))
    ]
    + [Field(name="purchases_24h", dtype=Int64), Field(name="repayments_7d", dtype=Int64)],
    source=user_features_source,
    online=True,
)

user_risk_source = FileSource(
    name="user_risk_source",
    path="../data/aws/offline/user_risk",
    timestamp_field="event_timestamp",
)

user_risk = FeatureView(
    name="user_risk",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="risk_score", dtype=Float64),
        Field(name="model_version", dtype=String),
    ],
    source=user_risk_source,
    online=True,
)


# Model groups (skyfeast.yaml jobs ``scores`` and ``blend``): one Float64 field per model, and the
# String ``model_set`` that names the set of model versions that wrote the row (`skyfeast runs --json`
# lists them). A group of thousands builds its schema with skyfeast.featurestore.models.groups.feast_schema.
user_scores = FeatureView(
    name="user_scores",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[Field(name="user_id", dtype=Int64)]
    + [Field(name=m, dtype=Float64) for m in ("churn", "fraud", "spend")]
    + [Field(name="model_set", dtype=String)],
    source=FileSource(name="user_scores_source", path="../data/aws/offline/user_scores",
                      timestamp_field="event_timestamp"),
    online=True,
)

user_blend = FeatureView(
    name="user_blend",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[Field(name="user_id", dtype=Int64), Field(name="blend", dtype=Float64),
            Field(name="model_set", dtype=String)],
    source=FileSource(name="user_blend_source", path="../data/aws/offline/user_blend",
                      timestamp_field="event_timestamp"),
    online=True,
)
