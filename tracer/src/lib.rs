//! The span store: spans by TraceID/SpanID/ParentSpanID from OTLP and from the spans topic of the
//! bus, with Jaeger- and Tempo-compatible query APIs.
//!
//! Invariant: the tracer reads only the spans topic and its own OTLP endpoints.
