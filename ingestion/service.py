"""``sonopolis ingest``: smart broker -> validated rows -> PostgreSQL, nothing lost.

Threads, in start order (stopped in reverse):

1. schema: wait for the database (backoff), apply migrations, create partitions ahead;
2. :class:`~ingestion.maintenance.Maintainer`: aggregates, partitions, retention;
3. :class:`~ingestion.pipeline.Pipeline`: batches, commits, then acks;
4. :class:`~ingestion.consumer.MqttConsumer`: the persistent MQTT session feeding the
   bounded inbox.

Stopping disconnects from the broker first (nothing new arrives), lets the pipeline
commit and ack what it holds, then lets the maintainer refresh the aggregates of the
last rows. A hard crash at any point loses nothing: unacked messages stay with the
broker and are redelivered; redelivered rows are deduplicated.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable


from common.backoff import Backoff
from common.postgres import UNAVAILABLE
from ingestion.consumer import Inbound, MqttConsumer
from ingestion.maintenance import Maintainer
from ingestion.metrics import IngestMetrics
from ingestion.pipeline import Pipeline
from ingestion.schema import migrate, use_timescale
from ingestion.settings import IngestSettings
from smart.db import SmartDbSettings, connect

log = logging.getLogger(__name__)


class StoppedBeforeStart(Exception):
    """A stop (SIGTERM) arrived while the service was still waiting for its database: a clean exit, not a failure."""


class IngestService:
    def __init__(self, db: SmartDbSettings, settings: IngestSettings, *, metrics: IngestMetrics | None = None):
        self.db = db
        self.settings = settings
        self.metrics = metrics or IngestMetrics()
        self.inbox: "queue.Queue[Inbound]" = queue.Queue(maxsize=settings.buffer_max_messages)
        self.stop_event = threading.Event()
        self.timescale = False
        self.consumer: MqttConsumer | None = None
        self.pipeline: Pipeline | None = None
        self.maintainer: Maintainer | None = None
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None  # what stopped a worker thread, if one died

    def start(self) -> "IngestService":
        self.timescale = self._prepare_database()
        self.maintainer = Maintainer(self.db, self.settings, timescale=self.timescale)
        self.consumer = MqttConsumer(
            self.settings.mqtt, self.inbox, self.metrics,
            receive_maximum=self.settings.buffer_max_messages, session_expiry_s=self.settings.session_expiry_s,
        )
        self.pipeline = Pipeline(
            self.db, self.settings, self.inbox, self.metrics, self.consumer.ack,
            timescale=self.timescale, on_committed=self.maintainer.touched,
        )
        self._threads = [
            threading.Thread(target=self._guarded, args=(self.maintainer.run,), name="ingest-maintenance", daemon=True),
            threading.Thread(target=self._guarded, args=(self.pipeline.run,), name="ingest-pipeline", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.consumer.start()
        log.info(
            "ingest started: %s path, batch %d rows / %.2f s, buffer %d messages",
            "timescale" if self.timescale else "plain", self.settings.batch_max_rows,
            self.settings.batch_max_delay_s, self.settings.buffer_max_messages,
        )
        return self

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run a worker; if it dies, the whole service stops and says why.

        A dead pipeline thread once left the process up and "connected" while nothing
        was written or acked again: a zombie no restart policy would catch. Now
        :meth:`wait` returns, ``failure`` holds the cause and ``sonopolis ingest`` exits 1.
        """
        try:
            work()
        except BaseException as exc:
            self.failure = exc
            log.critical("%s stopped on an unexpected error; stopping the service", threading.current_thread().name, exc_info=True)
            self.stop_event.set()

    def _prepare_database(self) -> bool:
        """Wait for the database, migrate, and return whether the Timescale path is used."""
        backoff = Backoff(initial=0.5, maximum=15.0)
        while True:
            try:
                with connect(self.db, connect_timeout=5) as conn:
                    migrate(conn, timescale=self.db.timescale, schema=self.db.schema_name)
                    ts = use_timescale(conn, self.db.timescale, self.db.schema_name)
                maintainer = Maintainer(self.db, self.settings, timescale=ts)
                maintainer.housekeeping()
                maintainer.close()
                return ts
            except UNAVAILABLE as exc:
                if self.stop_event.is_set():
                    raise StoppedBeforeStart("stopped while waiting for the database; nothing was consumed") from exc
                delay = backoff.next_delay()
                log.warning("database not reachable at start (%s); retrying in %.1f s", type(exc).__name__, delay)
                self.stop_event.wait(delay)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self.consumer is not None:
            self.consumer.stop()
        if self.pipeline is not None:
            # The consumer is gone: the pipeline's final flush can no longer ack, so its
            # rows are committed and the broker redelivers them (deduplicated) next time.
            self.pipeline.stop_event.set()
        for t in self._threads:
            if t.name == "ingest-pipeline":
                t.join(timeout)
        if self.maintainer is not None:
            self.maintainer.stop_event.set()
        for t in self._threads:
            t.join(timeout)
        log.info("ingest stopped")

    def drain_and_stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: commit and ack what is buffered *before* leaving the broker."""
        if self.pipeline is not None:
            self.pipeline.stop_event.set()
            for t in self._threads:
                if t.name == "ingest-pipeline":
                    t.join(timeout)
        self.stop(timeout)

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler)."""
        self.stop_event.wait()
