"""The project's own exception types: third-party errors are translated at this edge."""


class AstraResourceError(RuntimeError):
    """Base class for failures of an external component."""


class KafkaUnavailable(AstraResourceError):
    """The Kafka cluster could not be reached or refused a request."""


class LedgerAheadOfBroker(AstraResourceError):
    """The ingest ledger points past the end of a partition: the broker lost its log."""


class TopicRecreated(AstraResourceError):
    """The topic's id is not the one the ledger recorded: it was deleted and created
    again (or an in-memory broker restarted), and its offsets started again at 0."""


class WarehouseError(AstraResourceError):
    """DuckDB or the lake rejected a statement, or the lake could not be attached."""


class CommitConflict(WarehouseError):
    """The lake refused a commit because a concurrent transaction changed the same data;
    nothing of the transaction was written."""


class BrokerStartError(AstraResourceError):
    """The embedded broker did not start."""
