//! JPEG in and out for the image functions (`image`, `video`, `recognition`): zune-jpeg
//! decodes, jpeg-encoder encodes, both on their portable code paths (no SIMD feature), so
//! a guest and the host produce the same pixels and the same bytes.
//!
//! Sizes come from the file and are bounded before anything is allocated.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use jpeg_encoder::{ColorType, Encoder};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Largest width or height accepted.
pub const MAX_SIDE: usize = 16_384;
/// Largest number of pixels accepted (48 MP: 144 MiB as RGB).
pub const MAX_PIXELS: usize = 48 << 20;
/// Quality of the JPEGs the functions write (Pillow's default is 75; FunctionBench's
/// image functions save with the default).
pub const QUALITY: u8 = 85;

/// Decoded pixels, row-major, `channels` bytes per pixel (1: gray, 3: RGB).
pub struct Image {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bytes per pixel: 1 or 3.
    pub channels: usize,
    /// `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a baseline or progressive JPEG to RGB (gray images stay gray).
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    if bytes.get(..2) != Some(&[0xff, 0xd8][..]) {
        return Err(String::from("not a JPEG file (no SOI marker at the start)"));
    }
    let options = DecoderOptions::new_cmd().set_max_width(MAX_SIDE).set_max_height(MAX_SIDE).set_strict_mode(true);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("bad JPEG: {e:?}"))?;
    let info = decoder.info().ok_or_else(|| String::from("bad JPEG: no frame header"))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    if width == 0 || height == 0 || width * height > MAX_PIXELS {
        return Err(format!("JPEG of {width}×{height} pixels is outside 1..={MAX_PIXELS} pixels"));
    }
    let gray = info.components == 1;
    let space = if gray { ColorSpace::Luma } else { ColorSpace::RGB };
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options.jpeg_set_out_colorspace(space));
    let pixels = decoder.decode().map_err(|e| format!("bad JPEG: {e:?}"))?;
    let channels = if gray { 1 } else { 3 };
    if pixels.len() != width * height * channels {
        return Err(format!("bad JPEG: {} bytes decoded for {width}×{height}×{channels}", pixels.len()));
    }
    Ok(Image { width, height, channels, pixels })
}

/// Encodes `image` as a baseline JPEG of [`QUALITY`].
pub fn encode(image: &Image) -> Result<Vec<u8>, String> {
    let side = |v: usize| u16::try_from(v).map_err(|_| format!("{v} pixels is too wide for a JPEG"));
    let color = if image.channels == 1 { ColorType::Luma } else { ColorType::Rgb };
    let mut out = Vec::new();
    Encoder::new(&mut out, QUALITY)
        .encode(&image.pixels, side(image.width)?, side(image.height)?, color)
        .map_err(|e| format!("encoding the JPEG: {e:?}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_encodes_decodes_to_the_same_size() {
        let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let image = Image { width: 64, height: 48, channels: 3, pixels };
        let back = decode(&encode(&image).expect("encode")).expect("decode");
        assert_eq!((back.width, back.height, back.channels), (64, 48, 3));
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(decode(b"").is_err());
        assert!(decode(b"GIF89a").is_err());
        let image = Image { width: 32, height: 32, channels: 1, pixels: alloc::vec![128; 32 * 32] };
        let good = encode(&image).expect("encode");
        for cut in [2, 20, good.len() / 2, good.len() - 2] {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
