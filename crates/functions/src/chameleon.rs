//! `chameleon`: render an HTML table from a compiled template (FunctionBench's
//! `chameleon`, which renders its `BIGTABLE_ZPT` page template with the Chameleon
//! template compiler).
//!
//! Chameleon compiles a template to Python code; askama compiles it to Rust code at build
//! time, so the template below is the same kind of thing. Each of `rows` rows holds the
//! numbers `0..cols`; each cell is a `<span>` with a class and a value computed from the
//! number, as in the original.

use crate::util::digest;
use crate::{params, Env, Function};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use askama::Template;
use serde::{Deserialize, Serialize};

/// Marker type of the `chameleon` function.
pub struct Chameleon;

/// Most cells a request may ask for.
pub const MAX_CELLS: usize = 4 << 20;

/// FunctionBench's big table, in askama's syntax.
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<table xmlns="http://www.w3.org/1999/xhtml">
{% for row in table %}<tr>
{% for c in row %}<td><span class="column-{{ c + 1 }}">{{ c + 1 }}</span></td>
{% endfor %}</tr>
{% endfor %}</table>
"#
)]
struct BigTable<'a> {
    table: Vec<&'a [usize]>,
}

/// Request: `{"rows": n, "cols": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Table rows.
    pub rows: usize,
    /// Cells per row.
    pub cols: usize,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the rendered page.
    pub digest: String,
    /// Bytes of the rendered page.
    pub bytes: usize,
    /// Table rows.
    pub rows: usize,
    /// Cells per row.
    pub cols: usize,
}

impl Function for Chameleon {
    const NAME: &'static str = "chameleon";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        if req.rows == 0 || req.cols == 0 || req.rows.saturating_mul(req.cols) > MAX_CELLS {
            return Err(format!("a {}×{} table is not in 1..={MAX_CELLS} cells", req.rows, req.cols));
        }
        let row: Vec<usize> = (0..req.cols).collect();
        let page = BigTable { table: (0..req.rows).map(|_| row.as_slice()).collect() }
            .render()
            .map_err(|e| format!("rendering: {e}"))?;
        Ok(Response { digest: digest([page.as_bytes()]), bytes: page.len(), rows: req.rows, cols: req.cols })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_original_markup() {
        let page = BigTable { table: alloc::vec![&[0usize, 1][..]] }.render().unwrap();
        assert!(page.contains(r#"<td><span class="column-2">2</span></td>"#), "{page}");
        assert_eq!(page.matches("<tr>").count(), 1);
    }
}
