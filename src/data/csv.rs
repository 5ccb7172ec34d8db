//! CSV data: one example per record, numeric fields, one of them the class label. Parsed by the
//! `csv` crate: quoted fields, CRLF, LF or CR line ends; a UTF-8 byte-order mark is skipped.
//!
//! A first record whose fields are not all numbers is a header. The label column is given by
//! index (0-based) or, with a header, by name. Blank lines are skipped. No physical line may be
//! longer than [`MAX_CSV_LINE_BYTES`], and the values of a file may not exceed
//! [`MAX_TENSOR_ELEMENTS`]: both are found while reading, before memory grows past them.

use crate::error::{file_error, read_error, Result};
use crate::files::{checked_len, open_regular, reserve};
use crate::limits::{MAX_CSV_BYTES, MAX_CSV_LINE_BYTES, MAX_LAYER_UNITS, MAX_TENSOR_ELEMENTS};
use std::io::Read;
use std::path::Path;

/// Features (row-major, `rows × width`) and labels of a CSV file.
#[derive(Debug)]
pub struct CsvData {
    pub width: usize,
    pub features: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Read `path` (a regular file), taking the label from column `label_col` (an index, or a
/// header name).
pub fn read(path: &Path, label_col: &str) -> Result<CsvData> {
    let file = open_regular(path)?;
    checked_len(&file, path, MAX_CSV_BYTES)?;
    parse(std::io::BufReader::new(file), path, label_col)
}

/// At most this many characters of a field are quoted in a message.
const EXCERPT: usize = 40;

/// `field`, shortened for a message.
fn excerpt(field: &str) -> String {
    if field.chars().count() <= EXCERPT {
        field.to_string()
    } else {
        format!("{}…", field.chars().take(EXCERPT).collect::<String>())
    }
}

/// [`read`] from any reader; `origin` names it in messages.
pub fn parse(input: impl Read, origin: &Path, label_col: &str) -> Result<CsvData> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(Lines::new(input));
    let bad = |line: u64, message: String| file_error(origin, format!("line {line}: {message}"));
    let mut records = reader.records().filter(|r| !matches!(r, Ok(r) if r.len() == 1 && r[0].is_empty()));
    let read_record = |r: Option<csv::Result<csv::StringRecord>>| -> Result<Option<csv::StringRecord>> {
        r.transpose().map_err(|e| csv_error(origin, e))
    };
    let Some(first) = read_record(records.next())? else {
        return Err(file_error(origin, "empty CSV file: no examples"));
    };
    let columns = first.len();
    let has_header = first.iter().any(|f| f.parse::<f64>().is_err());
    let label_index = match label_col.parse::<usize>() {
        Ok(i) => i,
        Err(_) if has_header => first
            .iter()
            .position(|f| f == label_col)
            .ok_or_else(|| file_error(origin, format!("no column named '{}' in the header", excerpt(label_col))))?,
        Err(_) => {
            return Err(file_error(
                origin,
                format!("label column '{}' is not a number and the file has no header", excerpt(label_col)),
            ))
        }
    };
    if label_index >= columns {
        return Err(file_error(
            origin,
            format!("label column {label_index} does not exist: lines have {columns} fields"),
        ));
    }
    let mut data = CsvData { width: columns - 1, features: Vec::new(), labels: Vec::new() };
    let body = if has_header { None } else { Some(Ok(first)) };
    for record in body.into_iter().chain(records) {
        let record = record.map_err(|e| csv_error(origin, e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != columns {
            return Err(bad(line, format!("{} fields, expected {columns}", record.len())));
        }
        if data.features.len() + columns > MAX_TENSOR_ELEMENTS {
            return Err(file_error(
                origin,
                format!("more than {MAX_TENSOR_ELEMENTS} values, the limit of one data set"),
            ));
        }
        reserve(&mut data.features, columns, || format!("the values of {}", origin.display()))?;
        for (c, field) in record.iter().enumerate() {
            let value: f64 = field.parse().map_err(|_| {
                file_error(origin, format!("line {line}, column {c}: '{}' is not a number", excerpt(field)))
            })?;
            if !value.is_finite() {
                return Err(file_error(
                    origin,
                    format!("line {line}, column {c}: {} is not a finite number", excerpt(field)),
                ));
            }
            if c == label_index {
                if value < 0.0 || value.fract() != 0.0 || value >= MAX_LAYER_UNITS as f64 {
                    return Err(bad(line, format!("label {} is not a class index (0, 1, 2, ...)", excerpt(field))));
                }
                data.labels.push(value as usize);
            } else {
                data.features.push(value as f32);
            }
        }
    }
    if data.labels.is_empty() {
        return Err(file_error(origin, "no examples (only a header)"));
    }
    Ok(data)
}

/// A message for an error of the csv crate: ours (a line too long, a read error) as it is, the
/// crate's with the line it happened on.
fn csv_error(origin: &Path, e: csv::Error) -> crate::Error {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => file_error(origin, io.to_string()),
        csv::ErrorKind::Io(io) => read_error(origin, io),
        csv::ErrorKind::Utf8 { pos, .. } => {
            let line = pos.map_or(line.unwrap_or(0), |p| p.line());
            file_error(origin, format!("line {line}: not UTF-8 text"))
        }
        other => file_error(origin, format!("line {}: {other:?}", line.unwrap_or(0))),
    }
}

/// The bytes of a CSV input with a leading UTF-8 byte-order mark removed and a bound on the
/// length of every physical line (bytes between `\n` or `\r` characters).
struct Lines<R> {
    inner: R,
    /// Bytes at the start of the input still to be checked for a byte-order mark.
    at_start: bool,
    /// Bytes since the last line break.
    line_bytes: usize,
    /// Physical lines seen so far (for the message).
    line: usize,
}

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Self { inner, at_start: true, line_bytes: 0, line: 1 }
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = self.inner.read(buf)?;
        if self.at_start && n > 0 {
            // Fill at least three bytes to see a whole mark (reads may return fewer).
            while n < 3.min(buf.len()) {
                let more = self.inner.read(&mut buf[n..])?;
                if more == 0 {
                    break;
                }
                n += more;
            }
            self.at_start = false;
            if buf[..n].starts_with(&[0xEF, 0xBB, 0xBF]) {
                buf.copy_within(3..n, 0);
                n -= 3;
            }
        }
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                if b == b'\n' || self.line_bytes > 0 {
                    self.line += 1;
                }
                self.line_bytes = 0;
            } else {
                self.line_bytes += 1;
                if self.line_bytes > MAX_CSV_LINE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line {} is longer than {MAX_CSV_LINE_BYTES} bytes, the limit of one line", self.line),
                    ));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &[u8], label: &str) -> Result<CsvData> {
        parse(text, Path::new("t.csv"), label)
    }

    #[test]
    fn bom_quotes_and_every_line_end_are_read() {
        for text in [
            &b"\xEF\xBB\xBFy,a,b\n1,2,3\n0,4,5\n"[..],
            b"y,a,b\r\n1,2,3\r\n0,4,5\r\n",
            b"y,a,b\r1,2,3\r0,4,5",
            b"\"y\",\"a\",b\n\"1\",\" 2 \",3\n\n0,4,5\n",
        ] {
            let d = parse_str(text, "y").unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(text)));
            assert_eq!((d.labels, d.features, d.width), (vec![1, 0], vec![2.0, 3.0, 4.0, 5.0], 2));
        }
        // a BOM before a numeric first line does not make it a header
        let d = parse_str(b"\xEF\xBB\xBF1,2\n0,3\n", "0").unwrap();
        assert_eq!(d.labels, vec![1, 0]);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_without_reading_on() {
        let mut text = b"0,".to_vec();
        text.resize(MAX_CSV_LINE_BYTES + 10, b'1');
        let err = parse_str(&text, "0").unwrap_err().to_string();
        assert!(err.contains("line 1 is longer than"), "{err}");
    }

    #[test]
    fn long_fields_are_shortened_in_messages() {
        let text = format!("0,1\n1,{}\n", "x".repeat(5000));
        let err = parse_str(text.as_bytes(), "0").unwrap_err().to_string();
        assert!(err.contains("line 2, column 1: 'xxxx"), "{err}");
        assert!(err.len() < 200, "{err}");
    }
}
