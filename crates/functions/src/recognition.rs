//! `recognition`: classify a photo with a ResNet-18-style network (FunctionBench's
//! PyTorch ResNet image recognition).
//!
//! Init creates the network's weights from a fixed seed: 11.7 M parameters, ≈ 45 MiB of
//! `f32` that stay in memory (a model's weights, loaded before the snapshot). Every
//! invocation decodes the request's JPEG, crops its central square, scales it to
//! [`INPUT`] × [`INPUT`] pixels by averaging, normalises it with ImageNet's channel means
//! and deviations, and runs the network: it reads all the weights once (a read-mostly
//! working set of the kind the restore strategies are built for) and computes ≈ 0.3 G
//! multiply-adds. ResNet's usual input is 224 × 224; [`INPUT`] is smaller so that an
//! invocation stays in the low hundreds of milliseconds on one core without a BLAS.

use crate::jpeg::{self, Image};
use crate::util::{digest_numbers, rng, signed_unit, Rng};
use crate::{Env, Function};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::Serialize;

/// Marker type of the `recognition` function.
pub struct Recognition;

/// Classes the network scores.
pub const CLASSES: usize = 1000;
/// Side of the square input the photo is scaled to.
pub const INPUT: usize = 48;
const STAGES: [usize; 4] = [64, 128, 256, 512];
const BLOCKS_PER_STAGE: usize = 2;
/// ImageNet's per-channel mean and standard deviation (torchvision's normalisation).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the logits (little-endian `f32`).
    pub digest: String,
    /// The five most likely classes with their probabilities.
    pub top5: Vec<(usize, f32)>,
    /// Width of the photo.
    pub width: usize,
    /// Height of the photo.
    pub height: usize,
}

struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

struct Tensor {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

impl Conv {
    fn new(rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, gain: f32) -> Self {
        // He-uniform initialisation keeps activations in range without batch norm.
        let scale = gain * libm::sqrtf(6.0 / (cin * k * k) as f32);
        let weights = (0..cout * cin * k * k).map(|_| signed_unit(rng) * scale).collect();
        let bias = (0..cout).map(|_| signed_unit(rng) * 0.01).collect();
        Conv { cin, cout, k, stride, weights, bias }
    }

    fn parameters(&self) -> usize {
        self.weights.len() + self.bias.len()
    }

    /// Convolution with `k / 2` zero padding.
    fn forward(&self, x: &Tensor) -> Tensor {
        debug_assert_eq!(x.c, self.cin);
        let pad = self.k / 2;
        let (h, w, s) = (x.h, x.w, self.stride);
        let oh = (h + 2 * pad - self.k) / s + 1;
        let ow = (w + 2 * pad - self.k) / s + 1;
        let mut out = vec![0.0f32; self.cout * oh * ow];
        for (co, plane) in out.chunks_exact_mut(oh * ow).enumerate() {
            plane.fill(self.bias[co]);
            for ci in 0..self.cin {
                let input = &x.data[ci * h * w..(ci + 1) * h * w];
                let kernel = &self.weights[(co * self.cin + ci) * self.k * self.k..][..self.k * self.k];
                for ky in 0..self.k {
                    for kx in 0..self.k {
                        let wv = kernel[ky * self.k + kx];
                        // Output columns whose input column `ox*s + kx - pad` is inside the image.
                        let x_lo = (pad.saturating_sub(kx)).div_ceil(s);
                        let x_hi = ((w + pad - kx - 1) / s + 1).min(ow);
                        for oy in 0..oh {
                            let iy = oy * s + ky;
                            if iy < pad || iy - pad >= h {
                                continue;
                            }
                            let row = &input[(iy - pad) * w..][..w];
                            let orow = &mut plane[oy * ow..][..ow];
                            if s == 1 {
                                let shift = x_lo + kx - pad;
                                for (o, i) in orow[x_lo..x_hi].iter_mut().zip(&row[shift..]) {
                                    *o += wv * i;
                                }
                            } else {
                                for (ox, o) in orow.iter_mut().enumerate().take(x_hi).skip(x_lo) {
                                    *o += wv * row[ox * s + kx - pad];
                                }
                            }
                        }
                    }
                }
            }
        }
        Tensor { c: self.cout, h: oh, w: ow, data: out }
    }
}

fn relu(t: &mut Tensor) {
    for v in &mut t.data {
        *v = v.max(0.0);
    }
}

struct Block {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Block {
    fn forward(&self, x: Tensor) -> Tensor {
        let mut y = self.conv1.forward(&x);
        relu(&mut y);
        let mut y = self.conv2.forward(&y);
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(&x),
            None => x,
        };
        for (a, b) in y.data.iter_mut().zip(&skip.data) {
            *a += b;
        }
        relu(&mut y);
        y
    }
}

/// The network built by init.
pub struct State {
    stem: Conv,
    blocks: Vec<Block>,
    fc_weights: Vec<f32>,
    fc_bias: Vec<f32>,
}

impl State {
    /// Number of parameters (weights and biases).
    pub fn parameters(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| b.conv1.parameters() + b.conv2.parameters() + b.shortcut.as_ref().map_or(0, Conv::parameters))
            .sum();
        self.stem.parameters() + blocks + self.fc_weights.len() + self.fc_bias.len()
    }

    fn logits(&self, image: &Tensor) -> Vec<f32> {
        let mut x = self.stem.forward(image);
        relu(&mut x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        // Global average pooling.
        let area = (x.h * x.w) as f32;
        let pooled: Vec<f32> = x.data.chunks_exact(x.h * x.w).map(|plane| plane.iter().sum::<f32>() / area).collect();
        self.fc_weights
            .chunks_exact(pooled.len())
            .zip(&self.fc_bias)
            .map(|(row, bias)| row.iter().zip(&pooled).fold(*bias, |acc, (w, p)| acc + w * p))
            .collect()
    }
}

/// The network's input: the photo's central square, averaged down to `INPUT` × `INPUT`
/// (each output pixel is the mean of its box of source pixels), normalised per channel.
fn input(photo: &Image) -> Tensor {
    let side = photo.width.min(photo.height);
    let (x0, y0) = ((photo.width - side) / 2, (photo.height - side) / 2);
    // Output pixel i covers source offsets i·side/INPUT .. (i+1)·side/INPUT, at least one.
    let span = |i: usize| {
        let start = (i * side / INPUT).min(side - 1);
        (start, ((i + 1) * side / INPUT).max(start + 1))
    };
    let mut data = vec![0.0f32; 3 * INPUT * INPUT];
    for oy in 0..INPUT {
        let (ya, yb) = span(oy);
        for ox in 0..INPUT {
            let (xa, xb) = span(ox);
            let mut sum = [0u32; 3];
            for y in y0 + ya..y0 + yb {
                for x in x0 + xa..x0 + xb {
                    let at = (y * photo.width + x) * photo.channels;
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += u32::from(photo.pixels[at + c.min(photo.channels - 1)]);
                    }
                }
            }
            let count = ((yb - ya) * (xb - xa)) as f32;
            for c in 0..3 {
                let value = sum[c] as f32 / count / 255.0;
                data[(c * INPUT + oy) * INPUT + ox] = (value - MEAN[c]) / STD[c];
            }
        }
    }
    Tensor { c: 3, h: INPUT, w: INPUT, data }
}

impl Function for Recognition {
    const NAME: &'static str = "recognition";
    type State = State;
    type Response = Response;

    fn init(_: &Env) -> State {
        let mut rng = rng(0x7265_736e_6574, 0);
        let stem = Conv::new(&mut rng, 3, STAGES[0], 3, 2, 1.0);
        let mut blocks = Vec::new();
        let mut cin = STAGES[0];
        for (stage, &cout) in STAGES.iter().enumerate() {
            for b in 0..BLOCKS_PER_STAGE {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block {
                    conv1: Conv::new(&mut rng, cin, cout, 3, stride, 1.0),
                    // Damped second conv: the residual sum stays in range without batch norm.
                    conv2: Conv::new(&mut rng, cout, cout, 3, 1, 0.5),
                    shortcut: (stride != 1 || cin != cout).then(|| Conv::new(&mut rng, cin, cout, 1, stride, 1.0)),
                });
                cin = cout;
            }
        }
        let scale = libm::sqrtf(6.0 / cin as f32);
        let fc_weights = (0..CLASSES * cin).map(|_| signed_unit(&mut rng) * scale).collect();
        let fc_bias = (0..CLASSES).map(|_| signed_unit(&mut rng) * 0.01).collect();
        State { stem, blocks, fc_weights, fc_bias }
    }

    fn invoke(state: &mut State, request: &[u8]) -> Result<Response, String> {
        let photo = jpeg::decode(request)?;
        let logits = state.logits(&input(&photo));
        // Softmax over the logits, then the five best classes.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|v| libm::expf(v - max)).collect();
        let total: f32 = exps.iter().sum();
        let mut ranked: Vec<(usize, f32)> = exps.iter().map(|e| e / total).enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(5);
        Ok(Response {
            digest: digest_numbers(&logits, f32::to_le_bytes),
            top5: ranked,
            width: photo.width,
            height: photo.height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_the_normalised_central_square() {
        // A 60×40 photo: red left of the central square, green in it, blue right of it.
        let (w, h) = (60, 40);
        let mut pixels = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(if x < 10 {
                    &[255, 0, 0]
                } else if x < 50 {
                    &[0, 255, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let t = input(&Image { width: w, height: h, channels: 3, pixels });
        for (c, want) in [(0, -MEAN[0] / STD[0]), (1, (1.0 - MEAN[1]) / STD[1]), (2, -MEAN[2] / STD[2])] {
            assert!(t.data[c * INPUT * INPUT..][..INPUT * INPUT].iter().all(|v| (v - want).abs() < 1e-6), "{c}");
        }
        // A photo smaller than the input still fills it.
        let tiny = input(&Image { width: 3, height: 2, channels: 1, pixels: vec![255; 6] });
        assert!(tiny.data.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn network_has_at_least_32_mib_of_weights() {
        let state = Recognition::init(&Env::NATIVE);
        assert!(state.parameters() * 4 >= 32 << 20, "{} parameters", state.parameters());
    }
}
