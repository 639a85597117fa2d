//! Kafka behind a spool: the [`Bus`] that `bus::open` returns for `bus.kafka` with the spool on.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{CLOSE_GRACE, Spool, lock};
use crate::kafka::{KafkaBus, KafkaConfig};
use crate::{Bus, Consumer, Producer, Result, Topic};

/// First pause after failing to create the topics; doubled up to [`MAX_SETUP_BACKOFF`].
const FIRST_SETUP_BACKOFF: Duration = Duration::from_millis(500);
const MAX_SETUP_BACKOFF: Duration = Duration::from_secs(10);

/// Producers write to the spool under `<data dir>/spool`, which drains to Kafka; consumers read
/// Kafka directly. Opening it needs no broker: the topics are created (when configured) in the
/// background before the drain starts, and consumers are handed out once that is done.
#[derive(Debug)]
pub struct SpooledBus {
    kafka: KafkaBus,
    spool: Spool,
    ready: watch::Receiver<bool>,
    setup: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SpooledBus {
    /// Opens the spool in `spool_dir` and starts draining it to the brokers of `config`.
    pub fn open(config: KafkaConfig, spool_dir: &Path) -> Result<SpooledBus> {
        let kafka = KafkaBus::new(config.clone())?;
        let spool = Spool::open(spool_dir, config.spool.clone())?;
        let (ready_tx, ready) = watch::channel(false);
        let setup = {
            let (kafka, spool) = (kafka.clone(), spool.clone());
            tokio::spawn(async move {
                let mut backoff = FIRST_SETUP_BACKOFF;
                let mut attempts = 0u32;
                while kafka.config().create_topics {
                    match kafka.ensure_topics().await {
                        Ok(()) => break,
                        Err(e) => {
                            attempts += 1;
                            if attempts == 1 {
                                tracing::warn!(error = %e, "cannot create the kafka topics yet; spooling meanwhile and retrying");
                            } else {
                                tracing::debug!(error = %e, attempts, "creating the kafka topics failed again");
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_SETUP_BACKOFF);
                        }
                    }
                }
                if let Err(e) = spool.start_drain(Arc::new(kafka.kafka_producer())) {
                    tracing::error!(error = %e, "cannot start draining the spool");
                    return;
                }
                tracing::info!(brokers = %kafka.config().brokers, "kafka bus connected, draining the spool");
                let _ = ready_tx.send(true);
            })
        };
        Ok(SpooledBus {
            kafka,
            spool,
            ready,
            setup: Mutex::new(Some(setup)),
        })
    }

    /// The spool in front of the producer.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

#[async_trait]
impl Bus for SpooledBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn producer(&self) -> Result<Arc<dyn Producer>> {
        Ok(Arc::new(self.spool.producer()))
    }

    /// Waits until the topics exist (the broker was reached once), then joins the group.
    async fn consumer(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map_err(|_| crate::Error::Closed)?;
        self.kafka.consumer(group, topics).await
    }

    /// Drains the spool for up to [`CLOSE_GRACE`], closes it (the rest is sent after the next
    /// start), then gives the Kafka producer as long again for what is in flight: those records
    /// are still in the spool (not committed), so a broker that is down does not hold up the
    /// shutdown and loses nothing.
    async fn close(&self) -> Result<()> {
        let setup = lock(&self.setup).take();
        if let Some(setup) = setup {
            if !setup.is_finished() {
                setup.abort();
            }
            let _ = setup.await;
        }
        let spooled = self.spool.close(CLOSE_GRACE).await;
        if let Err(e) = self.kafka.close_within(CLOSE_GRACE).await {
            tracing::info!(error = %e, "records in flight to kafka stay in the spool and are sent again after the next start");
        }
        spooled
    }
}
