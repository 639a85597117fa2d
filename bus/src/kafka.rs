//! The Kafka bus, through `rdkafka` (librdkafka built from source by the crate).
//!
//! Producer: idempotent (`enable.idempotence=true`, hence `acks=all` and in-order retries),
//! compressed, a record acknowledged only when its delivery report says the broker has it.
//! Consumer: a consumer group with `enable.auto.commit=false`; [`Consumer::commit`] commits the
//! positions after what `poll` returned, so that a crash between the two re-delivers (at least
//! once). Topics are `<topic_prefix><name>` and are created at start when `create_topics` is set
//! (brokers such as tansu have no auto-creation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::metrics::{COMMITS, PRODUCE_ERRORS, PRODUCED_BYTES, PRODUCED_RECORDS, count_consumed};
use crate::{Bus, Consumer, Delivery, Error, Producer, Record, Result, Topic, check_group};

/// Compression codec of produced batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Settings of the Kafka bus (`bus: { kafka: … }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Prefix of the topic names: `<prefix>metrics`, `<prefix>logs`, `<prefix>spans`, `<prefix>events`.
    pub topic_prefix: String,
    /// Create missing topics at start (with `partitions` and `replication_factor`).
    pub create_topics: bool,
    /// Partitions of created topics: the upper bound of consumers sharing a group.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long a record may wait for the broker before its send fails (`message.timeout.ms`);
    /// covers broker restarts.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    pub client_id: String,
    /// Further librdkafka properties for every client (security, tuning), passed through as is.
    pub properties: BTreeMap<String, String>,
    /// The on-disk spool in front of the producer, so that producers keep being acknowledged
    /// while the brokers are unreachable.
    pub spool: crate::spool::SpoolConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            topic_prefix: "sextant.".to_owned(),
            create_topics: true,
            partitions: 6,
            replication_factor: 1,
            compression: Compression::Lz4,
            linger: Duration::from_millis(20),
            message_timeout: Duration::from_secs(300),
            client_id: "sextant".to_owned(),
            properties: BTreeMap::new(),
            spool: crate::spool::SpoolConfig::default(),
        }
    }
}

impl KafkaConfig {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("bus.kafka.brokers: must name at least one broker".to_owned());
        }
        if self.partitions < 1 {
            return Err(format!(
                "bus.kafka.partitions: {} is below 1",
                self.partitions
            ));
        }
        if self.replication_factor < 1 {
            return Err(format!(
                "bus.kafka.replication_factor: {} is below 1",
                self.replication_factor
            ));
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !self.topic_prefix.chars().all(legal) {
            return Err(format!(
                "bus.kafka.topic_prefix: {:?} has characters Kafka topic names cannot hold",
                self.topic_prefix
            ));
        }
        if self.message_timeout < Duration::from_secs(1) {
            return Err("bus.kafka.message_timeout: must be at least 1s".to_owned());
        }
        self.spool.validate()
    }

    /// A client config with `settings` (Sextant's choices for this kind of client), then the
    /// user's `properties`, which win: they are the operator's escape hatch.
    fn client_config(&self, settings: &[(&str, String)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (k, v) in settings {
            c.set(*k, v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The Kafka topic name of `topic`.
    pub fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }
}

fn ctx(context: &str) -> impl FnOnce(KafkaError) -> Error + '_ {
    move |source| Error::KafkaContext {
        context: context.to_owned(),
        source,
    }
}

/// The Kafka bus.
#[derive(Clone)]
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Creates the producer and, if configured, the topics.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus> {
        let bus = KafkaBus::new(config)?;
        if bus.config.create_topics {
            bus.ensure_topics().await?;
        }
        tracing::info!(brokers = %bus.config.brokers, "kafka bus connected");
        Ok(bus)
    }

    /// Creates the producer without contacting a broker (librdkafka connects in the background);
    /// topics are not created.
    pub fn new(config: KafkaConfig) -> Result<KafkaBus> {
        config.validate().map_err(Error::Config)?;
        let producer: FutureProducer = config
            .client_config(&[
                ("enable.idempotence", "true".to_owned()),
                ("acks", "all".to_owned()),
                ("compression.type", config.compression.as_str().to_owned()),
                ("linger.ms", config.linger.as_millis().to_string()),
                (
                    "message.timeout.ms",
                    config.message_timeout.as_millis().to_string(),
                ),
                ("queue.buffering.max.messages", "1000000".to_owned()),
            ])
            .create()
            .map_err(ctx("creating the producer"))?;
        Ok(KafkaBus {
            config,
            producer,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Refuses further sends and waits up to `timeout` for the records in flight (all of them
    /// with [`Bus::close`], which waits up to `message_timeout`).
    pub async fn close_within(&self, timeout: Duration) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| Error::Closed)?
            .map_err(ctx("flushing the producer"))
    }

    /// The bus's settings.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .client_config(&[])
            .create()
            .map_err(ctx("creating the admin client"))?;
        let names: Vec<String> = Topic::ALL
            .iter()
            .map(|t| self.config.topic_name(*t))
            .collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(ctx("creating topics"))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = name, "kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::KafkaContext {
                        context: format!("creating topic {name}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        Ok(())
    }

    /// The producer as its concrete type.
    pub fn kafka_producer(&self) -> KafkaProducer {
        KafkaProducer {
            producer: self.producer.clone(),
            names: Arc::new(
                Topic::ALL
                    .iter()
                    .map(|t| (*t, self.config.topic_name(*t)))
                    .collect(),
            ),
            closed: self.closed.clone(),
            flush_timeout: self.config.message_timeout,
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn producer(&self) -> Result<Arc<dyn Producer>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(Arc::new(self.kafka_producer()))
    }

    async fn consumer(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn Consumer>> {
        check_group(group)?;
        let consumer: StreamConsumer = self
            .config
            .client_config(&[
                ("group.id", group.to_owned()),
                ("enable.auto.commit", "false".to_owned()),
                ("auto.offset.reset", "earliest".to_owned()),
                ("enable.partition.eof", "false".to_owned()),
                ("session.timeout.ms", "10000".to_owned()),
            ])
            .create()
            .map_err(ctx("creating the consumer"))?;
        let names: BTreeMap<String, Topic> = topics
            .iter()
            .map(|t| (self.config.topic_name(*t), *t))
            .collect();
        let subscribe: Vec<&str> = names.keys().map(String::as_str).collect();
        consumer.subscribe(&subscribe).map_err(ctx("subscribing"))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            group: group.to_owned(),
            names,
            pending: BTreeMap::new(),
        }))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.kafka_producer().flush().await
    }
}

/// Producer of the Kafka bus; cheap to clone.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    names: Arc<BTreeMap<Topic, String>>,
    closed: Arc<AtomicBool>,
    flush_timeout: Duration,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").finish_non_exhaustive()
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, topic: Topic, records: Vec<Record>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let name = self.names.get(&topic).ok_or(Error::Closed)?;
        let mut deliveries = Vec::with_capacity(records.len());
        let mut failure = None;
        for r in &records {
            loop {
                let record = FutureRecord::to(name)
                    .key(&r.key[..])
                    .payload(&r.payload[..]);
                match self.producer.send_result(record) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    // librdkafka's queue is full: wait for deliveries to make room (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        failure = Some(Error::KafkaContext {
                            context: format!("enqueueing to {name}"),
                            source: e,
                        });
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        // Wait for every enqueued record, even after a failure, so none is left in doubt.
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert(Error::KafkaContext {
                        context: format!("delivering to {name}"),
                        source: e,
                    });
                }
                Err(_canceled) => {
                    failure.get_or_insert(Error::Closed);
                }
            }
        }
        match failure {
            None => {
                let bytes: usize = records.iter().map(|r| r.key.len() + r.payload.len()).sum();
                PRODUCED_RECORDS
                    .with_label_values(&["kafka", topic.name()])
                    .inc_by(records.len() as u64);
                PRODUCED_BYTES
                    .with_label_values(&["kafka", topic.name()])
                    .inc_by(bytes as u64);
                Ok(())
            }
            Some(e) => {
                PRODUCE_ERRORS
                    .with_label_values(&["kafka", topic.name()])
                    .inc();
                Err(e)
            }
        }
    }

    async fn flush(&self) -> Result<()> {
        let producer = self.producer.clone();
        let timeout = self.flush_timeout;
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| Error::Closed)?
            .map_err(ctx("flushing the producer"))
    }
}

/// Consumer of the Kafka bus: one member of a consumer group.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    group: String,
    names: BTreeMap<String, Topic>,
    /// Highest offset returned by `poll` per (topic, partition) since the last commit.
    pending: BTreeMap<(String, i32), i64>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Whether a consumer error only reports that brokers are unreachable (librdkafka keeps
/// reconnecting on its own).
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
        )
    )
}

/// How long `poll` keeps gathering once a first record arrived.
const GATHER: Duration = Duration::from_millis(2);

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let mut wait = timeout;
        let mut transient = 0u64;
        while out.len() < max {
            let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(m)) => m,
                // librdkafka reconnects by itself; these errors only report the outage, and one
                // is queued per attempt: skipping them keeps a returning broker's records from
                // waiting behind a backlog of stale reports.
                Ok(Err(e)) if is_transient(&e) => {
                    transient += 1;
                    continue;
                }
                Ok(Err(e)) => return Err(ctx("receiving")(e)),
            };
            wait = GATHER;
            let Some(topic) = self.names.get(message.topic()).copied() else {
                continue;
            };
            self.pending.insert(
                (message.topic().to_owned(), message.partition()),
                message.offset(),
            );
            out.push(Delivery {
                topic,
                partition: message.partition(),
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                key: message
                    .key()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default(),
                payload: message
                    .payload()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default(),
            });
        }
        if transient > 0 {
            tracing::debug!(group = %self.group, transient, "kafka consumer reported broker connection errors; librdkafka reconnects");
        }
        count_consumed("kafka", &self.group, &out);
        Ok(out)
    }

    async fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.pending {
            list.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
                .map_err(ctx("building the commit"))?;
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| Error::Closed)?
            .map_err(ctx("committing offsets"));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        COMMITS
            .with_label_values(&["kafka", &self.group, outcome])
            .inc();
        // On failure (e.g. a rebalance took the partitions) the records are re-delivered to
        // whoever owns them now: at least once.
        self.pending.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_outages_are_transient_for_consumers_other_errors_are_not() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(is_transient(&KafkaError::MessageConsumption(code)));
        }
        assert!(!is_transient(&KafkaError::MessageConsumption(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!is_transient(&KafkaError::Canceled));
    }

    #[test]
    fn spool_settings_are_validated_under_bus_kafka() {
        let mut c = KafkaConfig::default();
        assert!(c.spool.enabled);
        c.spool.max_bytes = bytesize::ByteSize::b(1);
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("bus.kafka.spool.max_bytes")
        );
    }
}
