//! RecordIO, the framing of Mesos v1 event streams: each record is its
//! length in decimal, a newline, then that many bytes (a JSON document).
//! Records do not follow the chunks of the HTTP body that carries them.
//!
//! The reader is for what strangers send: the length line is at most
//! [`MAX_LENGTH_DIGITS`] digits, and a record longer than the reader's
//! bound is refused before any of it is buffered.

/// Longest length prefix read: 20 digits hold any `u64`.
pub const MAX_LENGTH_DIGITS: usize = 20;

/// Why a stream is not RecordIO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("a record length holds {0:?}, not only digits")]
    NotDigits(String),
    #[error("a record length line is longer than {MAX_LENGTH_DIGITS} digits")]
    LengthTooLong,
    #[error("a record of {length} bytes is larger than the {max}-byte bound")]
    RecordTooLarge { length: u64, max: usize },
    #[error("the stream ended inside a record ({have} bytes buffered)")]
    Truncated { have: usize },
}

/// One record: its length line, then its bytes.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut framed = format!("{}\n", record.len()).into_bytes();
    framed.extend_from_slice(record);
    framed
}

/// Cuts a byte stream into records.
#[derive(Debug)]
pub struct RecordReader {
    max_record_bytes: usize,
    buffer: Vec<u8>,
}

impl RecordReader {
    pub fn new(max_record_bytes: usize) -> RecordReader {
        RecordReader {
            max_record_bytes,
            buffer: Vec::new(),
        }
    }

    /// Adds bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole record, if one has arrived. After an error the
    /// stream is not RecordIO and is to be closed.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordIoError> {
        let line_end = self.buffer.iter().position(|&byte| byte == b'\n');
        let digits = match line_end {
            Some(end) => &self.buffer[..end],
            None if self.buffer.len() > MAX_LENGTH_DIGITS => {
                return Err(RecordIoError::LengthTooLong);
            }
            None => {
                if let Some(bad) = self.buffer.iter().find(|byte| !byte.is_ascii_digit()) {
                    return Err(RecordIoError::NotDigits(
                        String::from_utf8_lossy(&[*bad]).into_owned(),
                    ));
                }
                return Ok(None);
            }
        };
        if digits.len() > MAX_LENGTH_DIGITS {
            return Err(RecordIoError::LengthTooLong);
        }
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(RecordIoError::NotDigits(
                String::from_utf8_lossy(digits).into_owned(),
            ));
        }
        let length: u64 = std::str::from_utf8(digits)
            .ok()
            .and_then(|digits| digits.parse().ok())
            .ok_or(RecordIoError::LengthTooLong)?;
        if length > self.max_record_bytes as u64 {
            return Err(RecordIoError::RecordTooLarge {
                length,
                max: self.max_record_bytes,
            });
        }
        let start = digits.len() + 1;
        // Bounded by `max_record_bytes` just above.
        let end = start + length as usize;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let record = self.buffer[start..end].to_vec();
        self.buffer.drain(..end);
        Ok(Some(record))
    }

    /// Checks that the stream ended between records.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(RecordIoError::Truncated {
                have: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_whatever_the_chunks() {
        let records: [&[u8]; 3] = [b"{\"type\":\"HEARTBEAT\"}", b"", b"x\ny"];
        let stream: Vec<u8> = records.iter().flat_map(|record| encode(record)).collect();
        for chunk in 1..stream.len() {
            let mut reader = RecordReader::new(1024);
            let mut read = Vec::new();
            for piece in stream.chunks(chunk) {
                reader.push(piece);
                while let Some(record) = reader.next_record().unwrap() {
                    read.push(record);
                }
            }
            assert_eq!(read, records.map(<[u8]>::to_vec));
            reader.finish().unwrap();
        }
    }

    #[test]
    fn hostile_streams_are_refused_without_buffering_them() {
        let check = |bytes: &[u8], expected: RecordIoError| {
            let mut reader = RecordReader::new(100);
            reader.push(bytes);
            assert_eq!(reader.next_record(), Err(expected), "{bytes:?}");
        };
        check(
            b"101\n",
            RecordIoError::RecordTooLarge {
                length: 101,
                max: 100,
            },
        );
        check(b"99999999999999999999\n", RecordIoError::LengthTooLong);
        check(
            b"18446744073709551615\n",
            RecordIoError::RecordTooLarge {
                length: u64::MAX,
                max: 100,
            },
        );
        check(b"999999999999999999999", RecordIoError::LengthTooLong);
        check(b"-1\n", RecordIoError::NotDigits("-1".into()));
        check(b"\n", RecordIoError::NotDigits(String::new()));
        check(b"1x", RecordIoError::NotDigits("x".into()));
        let mut reader = RecordReader::new(100);
        reader.push(b"5\nab");
        assert_eq!(reader.next_record(), Ok(None));
        assert_eq!(reader.finish(), Err(RecordIoError::Truncated { have: 4 }));
    }
}
