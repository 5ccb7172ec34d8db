//! CSV data: one example per line, numeric fields, one of them the class label.
//!
//! A first line whose fields are not all numbers is a header. The label column is given by index
//! (0-based) or, with a header, by name. Blank lines are skipped.

use crate::error::{file_error, io_error, Result};
use std::path::Path;

/// Features (row-major, `rows × width`) and labels of a CSV file.
pub struct CsvData {
    pub width: usize,
    pub features: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Read `path`, taking the label from column `label_col` (an index, or a header name).
pub fn read(path: &Path, label_col: &str) -> Result<CsvData> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).peekable();
    let first: Vec<&str> = match lines.peek() {
        Some((_, l)) => l.split(',').map(str::trim).collect(),
        None => return Err(file_error(path, "empty CSV file")),
    };
    let has_header = first.iter().any(|f| f.parse::<f64>().is_err());
    let label_index = match label_col.parse::<usize>() {
        Ok(i) => i,
        Err(_) if has_header => first
            .iter()
            .position(|f| *f == label_col)
            .ok_or_else(|| file_error(path, format!("no column named '{label_col}' in the header")))?,
        Err(_) => {
            return Err(file_error(path, format!("label column '{label_col}' is not a number and there is no header")))
        }
    };
    if label_index >= first.len() {
        return Err(file_error(
            path,
            format!("label column {label_index} does not exist: lines have {} fields", first.len()),
        ));
    }
    if has_header {
        lines.next();
    }
    let columns = first.len();
    let mut data = CsvData { width: columns - 1, features: Vec::new(), labels: Vec::new() };
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(file_error(path, format!("line {}: {} fields, expected {columns}", n + 1, fields.len())));
        }
        for (c, field) in fields.iter().enumerate() {
            let value: f64 = field
                .parse()
                .map_err(|_| file_error(path, format!("line {}, column {c}: '{field}' is not a number", n + 1)))?;
            if !value.is_finite() {
                return Err(file_error(path, format!("line {}, column {c}: {field} is not a finite number", n + 1)));
            }
            if c == label_index {
                if value < 0.0 || value.fract() != 0.0 {
                    return Err(file_error(
                        path,
                        format!("line {}: label {field} is not a class index (0, 1, 2, ...)", n + 1),
                    ));
                }
                data.labels.push(value as usize);
            } else {
                data.features.push(value as f32);
            }
        }
    }
    if data.labels.is_empty() {
        return Err(file_error(path, "no examples"));
    }
    Ok(data)
}
