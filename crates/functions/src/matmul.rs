//! `matmul`: multiply two seeded n×n matrices of `f64` (FunctionBench's `matmul`, which
//! calls numpy's `matmul` on random matrices).
//!
//! The product uses matrixmultiply's cache-blocked, packed GEMM (the crate ndarray uses)
//! with its portable kernel, which the guest and the host compile alike, so both produce
//! bit-identical results; the digest is of the product's bytes.

use crate::util::{digest_numbers, rng, unit_f64};
use crate::{params, Env, Function};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Marker type of the `matmul` function.
pub struct Matmul;

/// Largest `n` a request may ask for (three 4096² matrices: 384 MiB).
pub const MAX_N: usize = 4096;

/// Request: `{"n": size, "seed": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Rows and columns of each matrix.
    pub n: usize,
    /// Seed of the matrices (default 1).
    #[serde(default = "crate::util::default_seed")]
    pub seed: u64,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the product (row-major, little-endian `f64`).
    pub digest: String,
    /// Size of the matrices.
    pub n: usize,
    /// Sum of the product's diagonal.
    pub trace: f64,
}

/// `a × b` for row-major n×n matrices.
fn multiply(n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    assert!(a.len() == n * n && b.len() == n * n, "matrix sizes");
    let mut c = vec![0.0; n * n];
    let stride = n as isize;
    // SAFETY: a, b and c are n×n row-major matrices (checked above; c made here), so every
    // element dgemm reads or writes through (row stride n, column stride 1) is in bounds,
    // and c does not alias a or b.
    unsafe {
        matrixmultiply::dgemm(
            n,
            n,
            n,
            1.0,
            a.as_ptr(),
            stride,
            1,
            b.as_ptr(),
            stride,
            1,
            0.0,
            c.as_mut_ptr(),
            stride,
            1,
        );
    }
    c
}

impl Function for Matmul {
    const NAME: &'static str = "matmul";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        if req.n == 0 || req.n > MAX_N {
            return Err(format!("n {} is not in 1..={MAX_N}", req.n));
        }
        let n = req.n;
        let mut rng = rng(req.seed, 5);
        let a: Vec<f64> = (0..n * n).map(|_| unit_f64(&mut rng)).collect();
        let b: Vec<f64> = (0..n * n).map(|_| unit_f64(&mut rng)).collect();
        let c = multiply(n, &a, &b);
        let trace = (0..n).map(|i| c[i * n + i]).sum();
        Ok(Response { digest: digest_numbers(&c, f64::to_le_bytes), n, trace })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_multiplies() {
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(multiply(2, &a, &b), [19.0, 22.0, 43.0, 50.0]);
        // Odd sizes cross the kernel's block edges.
        let n = 37;
        let a: Vec<f64> = (0..n * n).map(|i| (i % 13) as f64).collect();
        let b: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64 - 3.0).collect();
        let c = multiply(n, &a, &b);
        for (i, j) in [(0, 0), (5, 36), (36, 17)] {
            let want: f64 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
            assert_eq!(c[i * n + j], want, "({i}, {j})");
        }
    }
}
