//! CSV data: one example per record, numeric fields; one of them the class label, or some of them
//! the continuous targets (regression). Parsed by the `csv` crate: quoted fields, CRLF, LF or CR
//! line ends; a UTF-8 byte-order mark is skipped.
//!
//! A first record whose fields are not all numbers is a header ([`Header::Auto`]); `--header
//! yes` or `no` says so instead (a header of numbers, like pandas' `0,1,2`). Columns are given by index
//! (0-based) or, with a header, by name. Blank lines are skipped. No physical line may be longer
//! than [`MAX_CSV_LINE_BYTES`], and the values of a file may not exceed [`MAX_TENSOR_ELEMENTS`]:
//! both are found while reading, before memory grows past them.

use crate::error::{file_error, read_error, Result};
use crate::files::{checked_len, open_regular, reserve};
use crate::limits::{MAX_CSV_BYTES, MAX_CSV_LINE_BYTES, MAX_LAYER_UNITS, MAX_TENSOR_ELEMENTS};
use std::io::Read;
use std::path::Path;

/// Whether the first record is a header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Header {
    /// A header when one of its fields is not a number.
    #[default]
    Auto,
    /// Always a header (its names may be numbers).
    Yes,
    /// Never a header: an example, whose fields must be numbers.
    No,
}

impl Header {
    pub fn is_auto(&self) -> bool {
        *self == Header::Auto
    }
}

/// Which columns are not features.
#[derive(Clone, Copy, Debug)]
pub enum Columns<'a> {
    /// One column of class indices.
    Label(&'a str),
    /// One or more columns of continuous targets, in this order.
    Targets(&'a [String]),
}

/// Features (row-major, `rows × width`) and labels or targets (row-major, `rows × target_width`)
/// of a CSV file.
#[derive(Debug)]
pub struct CsvData {
    pub width: usize,
    pub features: Vec<f32>,
    pub labels: Vec<usize>,
    pub target_width: usize,
    pub targets: Vec<f32>,
    /// Examples read.
    pub rows: usize,
    /// The target columns by header name (by index when the file has no header).
    pub target_names: Vec<String>,
    /// The header's column names, when the file has one.
    pub header: Option<Vec<String>>,
}

/// Read `path` (a regular file), taking the label or the targets from `columns`.
pub fn read(path: &Path, columns: Columns<'_>, header: Header) -> Result<CsvData> {
    let file = open_regular(path)?;
    checked_len(&file, path, MAX_CSV_BYTES)?;
    parse_with(std::io::BufReader::new(file), path, columns, header)
}

/// At most this many characters of a field are quoted in a message.
const EXCERPT: usize = 40;

/// `field`, shortened for a message.
fn excerpt(field: &str) -> String {
    crate::error::shorten(field, EXCERPT)
}

/// The index of column `name` (a number, or a header name) among `columns` fields.
fn column_index(
    what: &str,
    name: &str,
    header: Option<&csv::StringRecord>,
    columns: usize,
    origin: &Path,
) -> Result<usize> {
    let index = match (name.parse::<usize>(), header) {
        (Ok(i), _) => i,
        (Err(_), Some(header)) => header
            .iter()
            .position(|f| f == name)
            .ok_or_else(|| file_error(origin, format!("no column named '{}' in the header", excerpt(name))))?,
        (Err(_), None) => {
            return Err(file_error(
                origin,
                format!("{what} '{}' is not a number and the file has no header", excerpt(name)),
            ))
        }
    };
    if index >= columns {
        return Err(file_error(origin, format!("{what} {index} does not exist: lines have {columns} fields")));
    }
    Ok(index)
}

/// What each column of a record is.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Feature,
    Label,
    /// The target of this position in the target list.
    Target(usize),
}

/// The role of every column, and the target columns' names.
fn roles(
    spec: Columns<'_>,
    header: Option<&csv::StringRecord>,
    columns: usize,
    origin: &Path,
) -> Result<(Vec<Role>, Vec<String>)> {
    let mut roles = vec![Role::Feature; columns];
    let mut names = Vec::new();
    match spec {
        Columns::Label(name) => roles[column_index("label column", name, header, columns, origin)?] = Role::Label,
        Columns::Targets(list) => {
            if list.is_empty() {
                return Err(file_error(origin, "no target column given"));
            }
            for (d, name) in list.iter().enumerate() {
                let c = column_index("target column", name, header, columns, origin)?;
                if roles[c] != Role::Feature {
                    return Err(file_error(origin, format!("target column '{}' is given twice", excerpt(name))));
                }
                roles[c] = Role::Target(d);
                names.push(header.map_or(c.to_string(), |h| h[c].to_string()));
            }
            if list.len() == columns {
                return Err(file_error(origin, "every column is a target: no features are left"));
            }
        }
    }
    Ok((roles, names))
}

/// [`read`] from any reader, the header detected; `origin` names it in messages.
pub fn parse(input: impl Read, origin: &Path, spec: Columns<'_>) -> Result<CsvData> {
    parse_with(input, origin, spec, Header::Auto)
}

/// [`read`] from any reader; `origin` names it in messages.
pub fn parse_with(input: impl Read, origin: &Path, spec: Columns<'_>, header: Header) -> Result<CsvData> {
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
    let has_header = match header {
        Header::Auto => first.iter().any(|f| f.parse::<f64>().is_err()),
        Header::Yes => true,
        Header::No => false,
    };
    let (roles, target_names) = roles(spec, has_header.then_some(&first), columns, origin)?;
    let target_width = target_names.len();
    let width = columns - roles.iter().filter(|r| **r != Role::Feature).count();
    let mut data = CsvData {
        width,
        features: Vec::new(),
        labels: Vec::new(),
        target_width,
        targets: Vec::new(),
        rows: 0,
        target_names,
        header: has_header.then(|| first.iter().map(str::to_string).collect()),
    };
    let mut row_targets = vec![0.0f32; target_width];
    let body = if has_header { None } else { Some(Ok(first)) };
    for record in body.into_iter().chain(records) {
        let record = record.map_err(|e| csv_error(origin, e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != columns {
            return Err(bad(line, format!("{} fields, expected {columns}", record.len())));
        }
        if (data.rows + 1).saturating_mul(columns) > MAX_TENSOR_ELEMENTS {
            return Err(file_error(
                origin,
                format!("more than {MAX_TENSOR_ELEMENTS} values, the limit of one data set"),
            ));
        }
        reserve(&mut data.features, width, || format!("the values of {}", origin.display()))?;
        reserve(&mut data.targets, target_width, || format!("the targets of {}", origin.display()))?;
        for ((c, field), role) in record.iter().enumerate().zip(&roles) {
            let value: f64 = field.parse().map_err(|_| {
                file_error(origin, format!("line {line}, column {c}: '{}' is not a number", excerpt(field)))
            })?;
            if !value.is_finite() {
                return Err(file_error(
                    origin,
                    format!("line {line}, column {c}: {} is not a finite number", excerpt(field)),
                ));
            }
            match *role {
                Role::Feature => data.features.push(value as f32),
                Role::Label => {
                    if value < 0.0 || value.fract() != 0.0 || value >= MAX_LAYER_UNITS as f64 {
                        return Err(bad(line, format!("label {} is not a class index (0, 1, 2, ...)", excerpt(field))));
                    }
                    data.labels.push(value as usize);
                }
                Role::Target(d) => {
                    if !(value as f32).is_finite() {
                        return Err(bad(
                            line,
                            format!("column {c}: target {} is beyond the range of f32", excerpt(field)),
                        ));
                    }
                    row_targets[d] = value as f32;
                }
            }
        }
        data.targets.extend_from_slice(&row_targets);
        data.rows += 1;
    }
    if data.rows == 0 {
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
        parse(text, Path::new("t.csv"), Columns::Label(label))
    }

    fn parse_targets(text: &[u8], targets: &[&str]) -> Result<CsvData> {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        parse(text, Path::new("t.csv"), Columns::Targets(&targets))
    }

    #[test]
    fn target_columns_by_name_or_index_leave_the_rest_as_features() {
        let d = parse_targets(b"a,y1,b,y2\n1,2.5,3,-4\n5,6,7,8\n", &["y2", "y1"]).unwrap();
        assert_eq!((d.width, d.features), (2, vec![1.0, 3.0, 5.0, 7.0]));
        assert_eq!((d.target_width, d.targets), (2, vec![-4.0, 2.5, 8.0, 6.0]));
        assert_eq!(d.target_names, vec!["y2", "y1"]);
        let d = parse_targets(b"1,2,3\n4,5,6\n", &["0"]).unwrap();
        assert_eq!(
            (d.features, d.targets, d.target_names),
            (vec![2.0, 3.0, 5.0, 6.0], vec![1.0, 4.0], vec!["0".into()])
        );
    }

    #[test]
    fn bad_target_columns_are_named() {
        let err = |t: &[&str], text: &[u8]| parse_targets(text, t).unwrap_err().to_string();
        assert!(err(&["y"], b"1,2\n").contains("target column 'y' is not a number and the file has no header"));
        assert!(err(&["z"], b"a,y\n1,2\n").contains("no column named 'z'"));
        assert!(err(&["5"], b"1,2\n").contains("target column 5 does not exist: lines have 2 fields"));
        assert!(err(&["1", "1"], b"1,2,3\n").contains("given twice"));
        assert!(err(&["0", "1"], b"1,2\n").contains("no features are left"));
        assert!(err(&["1"], b"1,1e39\n").contains("beyond the range of f32"));
        assert!(err(&["1"], b"1,nan\n").contains("not a finite number"));
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
