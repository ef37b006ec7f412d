//! Plain text tables: a header row and rows, columns two spaces apart, numbers aligned right,
//! no trailing spaces.
//!
//! ```text
//! action      key           status     token  age    expires
//! send_email  9f3a1c04b2e7  completed      1  3m12s  in 23h56m
//! ```

/// A table being filled.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, every column aligned left.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns the columns at these indexes to the right (numbers).
    pub(crate) fn right(mut self, columns: &[usize]) -> Self {
        for &column in columns {
            if let Some(right) = self.right.get_mut(column) {
                *right = true;
            }
        }
        self
    }

    /// Adds a row; its cells are made printable on one line ([`one_line`]).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|cell| one_line(&cell)).collect());
    }

    /// Whether no row was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text, each ending with a newline.
    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate().take(columns) {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (column, width) in widths.iter().enumerate() {
                let cell = row.get(column).map_or("", String::as_str);
                if column > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(width - self::width(cell));
                if self.right[column] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// The width of a cell on a terminal, counted in characters.
fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// `text` on one line and harmless to a terminal: line breaks and tabs become spaces, other
/// control characters (escape sequences from a foreign record) become `�`.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `text` harmless to a terminal, line breaks kept.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `text` cut to `max` characters, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new(&["action", "count", "note"]).right(&[1]);
        table.row(vec!["send_email".into(), "7".into(), String::new()]);
        table.row(vec!["charge".into(), "1204".into(), "two\nlines".into()]);
        assert_eq!(
            table.render(),
            "action      count  note\n\
             send_email      7\n\
             charge       1204  two lines\n"
        );
    }

    #[test]
    fn text_is_made_harmless() {
        assert_eq!(one_line("a\tb\x1b[31m"), "a b\u{fffd}[31m");
        assert_eq!(printable("a\nb\x07"), "a\nb\u{fffd}");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
