//! `image`: decode a JPEG photo, rotate it 90° clockwise, encode it as JPEG again
//! (FunctionBench's `image_processing` rotate step, as the PASS paper runs it).
//!
//! The request is the JPEG file itself (raw bytes).

use crate::jpeg::{self, Image};
use crate::util::digest;
use crate::{Env, Function};
use alloc::string::String;
use alloc::vec;
use serde::Serialize;

/// Marker type of the `image` function.
pub struct ImageRotate;

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the rotated JPEG.
    pub digest: String,
    /// Width of the rotated image (the source's height).
    pub width: usize,
    /// Height of the rotated image (the source's width).
    pub height: usize,
    /// Bytes of the rotated JPEG.
    pub bytes: usize,
}

/// The image turned 90° clockwise: source row `y` becomes column `height - 1 - y`.
fn rotate_clockwise(src: &Image) -> Image {
    let (w, h, c) = (src.width, src.height, src.channels);
    let mut pixels = vec![0u8; src.pixels.len()];
    for y in 0..h {
        let row = &src.pixels[y * w * c..(y + 1) * w * c];
        for (x, pixel) in row.chunks_exact(c).enumerate() {
            let at = (x * h + (h - 1 - y)) * c;
            pixels[at..at + c].copy_from_slice(pixel);
        }
    }
    Image { width: h, height: w, channels: c, pixels }
}

impl Function for ImageRotate {
    const NAME: &'static str = "image";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let rotated = rotate_clockwise(&jpeg::decode(request)?);
        let out = jpeg::encode(&rotated)?;
        Ok(Response {
            digest: digest([out.as_slice()]),
            width: rotated.width,
            height: rotated.height,
            bytes: out.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_clockwise() {
        // 2×3 gray image: rows [1 2], [3 4], [5 6] → rows [5 3 1], [6 4 2].
        let src = Image { width: 2, height: 3, channels: 1, pixels: vec![1, 2, 3, 4, 5, 6] };
        let r = rotate_clockwise(&src);
        assert_eq!((r.width, r.height), (3, 2));
        assert_eq!(r.pixels, [5, 3, 1, 6, 4, 2]);
    }
}
