//! Plain-text tables in the `dataos-ctl` look: two leading spaces, ` | ` between columns,
//! headers centred in their column, cells left-aligned, no trailing spaces.

/// Renders a header line and one line per row, each ending with a line break.
///
/// A column is as wide as its widest header or cell, counted in characters. Rows shorter than
/// the header get blank cells.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(headers, rows);
    header_line(headers, &widths) + &row_lines(&widths, rows)
}

/// The width of each column: its widest header or cell, in characters.
pub fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    headers
        .iter()
        .enumerate()
        .map(|(column, header)| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .chain([header.chars().count()])
                .max()
                .unwrap_or_default()
        })
        .collect()
}

/// The header line, each header centred in its column's width.
pub fn header_line(headers: &[&str], widths: &[usize]) -> String {
    line(headers.iter().zip(widths).map(|(h, w)| centred(h, *w)))
}

/// One line per row, each cell left-aligned in its column's width.
pub fn row_lines(widths: &[usize], rows: &[Vec<String>]) -> String {
    let mut text = String::new();
    for row in rows {
        text += &line(widths.iter().enumerate().map(|(column, width)| {
            left_aligned(
                row.get(column).map(String::as_str).unwrap_or_default(),
                *width,
            )
        }));
    }
    text
}

fn line(cells: impl Iterator<Item = String>) -> String {
    let joined = cells.collect::<Vec<_>>().join(" | ");
    format!("  {}\n", joined.trim_end())
}

fn centred(text: &str, width: usize) -> String {
    let gap = width.saturating_sub(text.chars().count());
    let left = gap / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(gap - left))
}

fn left_aligned(text: &str, width: usize) -> String {
    format!("{text:<width$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: [&str; 7] = [
        "NAME",
        "VERSION",
        "TYPE",
        "WORKSPACE",
        "STATUS",
        "RUNTIME",
        "OWNER",
    ];

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_seed_example_row_renders_in_the_dataos_ctl_layout() {
        let rows = [row(&[
            "pipeline-run-1",
            "v1alpha",
            "resource",
            "public",
            "active",
            "inprogress",
            "iamgroot",
        ])];
        assert_eq!(
            render(&HEADERS, &rows),
            concat!(
                "       NAME      | VERSION |   TYPE   | WORKSPACE | STATUS |  RUNTIME   |  OWNER\n",
                "  pipeline-run-1 | v1alpha | resource | public    | active | inprogress | iamgroot\n",
            )
        );
    }

    #[test]
    fn empty_cells_are_blank_and_trailing_spaces_are_trimmed() {
        let rows = [row(&[
            "adf-operator",
            "v1alpha",
            "operator",
            "",
            "active",
            "",
            "",
        ])];
        let text = render(&HEADERS, &rows);
        assert_eq!(
            text.lines().nth(1),
            Some("  adf-operator | v1alpha | operator |           | active |         |")
        );
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(render(&["NAME", "TYPE"], &[]), "  NAME | TYPE\n");
    }
}
