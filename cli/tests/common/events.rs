//! Reading a v1 API event stream (scheduler or operator) record by
//! record, over a blocking HTTP client.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_api::recordio::RecordReader;

pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The events of one subscription, record by record.
pub struct Events {
    pub body: Box<dyn Read + Send>,
    pub reader: RecordReader,
}

impl Events {
    /// The events of a streamed answer.
    pub fn of(body: Box<dyn Read + Send>) -> Events {
        Events {
            body,
            reader: RecordReader::new(1 << 24),
        }
    }

    pub fn next(&mut self) -> Value {
        loop {
            if let Some(record) = self.reader.next_record().unwrap() {
                return serde_json::from_slice(&record).unwrap();
            }
            let mut buffer = [0; 4096];
            let read = self.body.read(&mut buffer).unwrap();
            assert!(read > 0, "the stream ended");
            self.reader.push(&buffer[..read]);
        }
    }

    /// The next event of type `kind`, skipping heartbeats and others.
    pub fn next_of(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let event = self.next();
            if event["type"] == kind {
                return event;
            }
            assert!(Instant::now() < deadline, "no {kind} event");
        }
    }
}
