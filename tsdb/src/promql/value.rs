//! Query results, as the HTTP API renders them.

use crate::labels::Labels;
use crate::storage::SeriesSamples;

/// One element of an instant vector: a series' labels and its value at the evaluation time.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSample {
    pub labels: Labels,
    /// Milliseconds since the epoch (the evaluation time).
    pub t: i64,
    pub v: f64,
}

/// The result of a query, one of Prometheus's four result types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        s: String,
    },
    /// Instant vector.
    Vector(Vec<VectorSample>),
    /// Range vector (range queries and range selectors): series sorted by labels, samples in
    /// time order.
    Matrix(Vec<SeriesSamples>),
}

impl Value {
    /// Prometheus's `resultType`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
