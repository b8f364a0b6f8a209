//! The catalog of built-in functions and their inputs (host only: the `catalog` feature;
//! the guests never compile it, so the input files stay out of their images and
//! snapshots).
//!
//! Every function has inputs `A` and `B` — record a working set with `A`, measure with
//! `B` (FaaSnap's two-input method) — and six inputs `1`..`6` spanning FaaSnap's ranges
//! (record with `2`, measure the other five). Files are real ones (their origin and
//! licence are in `inputs/<kind>/ORIGIN.md`); parameters drive seeded, deterministic
//! generators inside the functions.

use crate::{
    chameleon, compression, hello, image, json, matmul, mmap, pagerank, pyaes, read_list, recognition, video, Function,
};

/// What a function takes as its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Nothing: any request is accepted and ignored.
    Empty,
    /// A small JSON object of parameters, shaped like `format`.
    Params {
        /// The fields, e.g. `{"n": <size>, "seed": <n, optional>}`.
        format: &'static str,
    },
    /// The raw bytes of a file, exactly as the user has it (no encoding).
    File {
        /// Which kind of file, e.g. "a JPEG photo".
        what: &'static str,
    },
}

/// One built-in input of a function.
#[derive(Clone, Copy, Debug)]
pub struct InputInfo {
    /// `A`, `B` or `1`..`6`.
    pub name: &'static str,
    /// One line: what it is.
    pub description: &'static str,
    /// The request bytes.
    pub request: &'static [u8],
    /// Guest memory (MiB) to run the input in: [`TESTED_MEM_MIB`], or more where the input
    /// needs more (then it does not run in less); the default 1 GiB fits every input.
    pub mem_mib: u64,
}

impl InputInfo {
    /// Bytes of the request.
    pub fn size(&self) -> usize {
        self.request.len()
    }
}

/// A built-in function.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Name ([`Function::NAME`]), also the name of its guest image.
    pub name: &'static str,
    /// One line for `snapvisor functions`.
    pub description: &'static str,
    /// What its request is.
    pub request: RequestKind,
    /// Its inputs: `A`, `B`, then `1`..`6`.
    pub inputs: &'static [InputInfo],
}

impl Info {
    /// The input called `name` (`A`, `B`, `1`..`6`).
    pub fn input(&self, name: &str) -> Option<&'static InputInfo> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// Input names, in catalog order.
pub const INPUT_NAMES: [&str; 8] = ["A", "B", "1", "2", "3", "4", "5", "6"];
/// The input a two-input run records the working set with.
pub const RECORD_INPUT: &str = "A";
/// The input a two-input run measures.
pub const MEASURE_INPUT: &str = "B";
/// The input a six-input run records with; it measures the other five.
pub const SIX_RECORD_INPUT: &str = "2";

/// Guest memory (MiB) every input that says nothing else is tested in (it may run in
/// less); an input with more needs that much.
pub const TESTED_MEM_MIB: u64 = 256;

/// An input that runs in [`TESTED_MEM_MIB`].
const fn entry(name: &'static str, description: &'static str, request: &'static [u8]) -> InputInfo {
    InputInfo { name, description, request, mem_mib: TESTED_MEM_MIB }
}

/// An input that needs `mem_mib` of guest memory.
const fn big(name: &'static str, description: &'static str, request: &'static [u8], mem_mib: u64) -> InputInfo {
    InputInfo { name, description, request, mem_mib }
}

macro_rules! file {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/inputs/", $path))
    };
}

const JSON_1: &[u8] = file!("json/1-mime-db.json");
const JSON_2: &[u8] = file!("json/2-unicode-emoji-json.json");
const JSON_3: &[u8] = file!("json/3-world-countries.json");
const JSON_4: &[u8] = file!("json/4-emojibase-hi.json");
const JSON_5: &[u8] = file!("json/5-iconify-tabler.json");
const JSON_6: &[u8] = file!("json/6-iconify-mdi.json");
const DOCUMENTS: &[InputInfo] = &[
    entry("A", "= input 1: mime-db's media-type database (object of objects, 204 KB)", JSON_1),
    entry("B", "= input 4: emojibase's Hindi emoji data (array of records, non-ASCII, 1.0 MB)", JSON_4),
    entry("1", "mime-db's media-type database (npm mime-db 1.54.0, 204 KB)", JSON_1),
    entry("2", "emoji by group (npm unicode-emoji-json 0.9.0, 422 KB)", JSON_2),
    entry("3", "countries of the world (npm world-countries 5.1.0, 772 KB)", JSON_3),
    entry("4", "Hindi emoji data (npm emojibase-data 17.0.0, 1.0 MB)", JSON_4),
    entry("5", "Tabler icon set, SVG bodies (npm @iconify-json/tabler 1.2.41, 2.1 MB)", JSON_5),
    entry("6", "Material Design icon set, SVG bodies (npm @iconify-json/mdi 1.2.3, 3.1 MB)", JSON_6),
];

const PHOTO_1: &[u8] = file!("image/1-rocket.jpg");
const PHOTO_2: &[u8] = file!("image/2-retina.jpg");
const PHOTO_3: &[u8] = file!("image/3-hubble-deep-field.jpg");
const PHOTO_4: &[u8] = file!("image/4-moon-2400.jpg");
const PHOTO_5: &[u8] = file!("image/5-moon-3072.jpg");
const PHOTO_6: &[u8] = file!("image/6-moon-3584.jpg");
const PHOTOS: &[InputInfo] = &[
    entry("A", "= input 1: a rocket launch (640×427, 113 KB)", PHOTO_1),
    entry("B", "= input 6: the Moon, 3584×1792 (1.5 MB)", PHOTO_6),
    entry("1", "a Falcon 9 launch, SpaceX (640×427, 113 KB)", PHOTO_1),
    entry("2", "a human retina (1411×1411, 270 KB)", PHOTO_2),
    entry("3", "the Hubble eXtreme Deep Field (1000×872, 528 KB)", PHOTO_3),
    entry("4", "a map of the Moon from real photographs (2400×1200, 682 KB)", PHOTO_4),
    entry("5", "the same map (3072×1536, 1.1 MB)", PHOTO_5),
    entry("6", "the same map (3584×1792, 1.5 MB)", PHOTO_6),
];

const CLIP_1: &[u8] = file!("video/1-bbb-180p.mjpeg");
const CLIP_2: &[u8] = file!("video/2-bbb-270p.mjpeg");
const CLIP_3: &[u8] = file!("video/3-bbb-360p.mjpeg");
const CLIP_4: &[u8] = file!("video/4-bbb-480p.mjpeg");
const CLIP_5: &[u8] = file!("video/5-bbb-720p-a.mjpeg");
const CLIP_6: &[u8] = file!("video/6-bbb-720p-b.mjpeg");
const CLIPS: &[InputInfo] = &[
    entry("A", "= input 5: Big Buck Bunny, 19 frames of 1280×720 (1.1 MB)", CLIP_5),
    entry("B", "= input 6: Big Buck Bunny, 28 other frames of 1280×720 (1.5 MB)", CLIP_6),
    entry("1", "Big Buck Bunny, 14 frames of 320×180 (103 KB)", CLIP_1),
    entry("2", "Big Buck Bunny, 15 frames of 480×270 (206 KB)", CLIP_2),
    entry("3", "Big Buck Bunny, 19 frames of 640×360 (403 KB)", CLIP_3),
    entry("4", "Big Buck Bunny, 22 frames of 854×480 (694 KB)", CLIP_4),
    entry("5", "Big Buck Bunny, 19 frames of 1280×720 (1.1 MB)", CLIP_5),
    entry("6", "Big Buck Bunny, 28 frames of 1280×720 (1.5 MB)", CLIP_6),
];

/// Every built-in function, in the order the benchmark runs them.
pub const CATALOG: &[Info] = &[
    Info {
        name: hello::Hello::NAME,
        description: "answer at once (the restore floor)",
        request: RequestKind::Empty,
        inputs: &[
            entry("A", "empty", b""),
            entry("B", "empty", b""),
            entry("1", "empty", b""),
            entry("2", "empty", b""),
            entry("3", "empty", b""),
            entry("4", "empty", b""),
            entry("5", "empty", b""),
            entry("6", "empty", b""),
        ],
    },
    Info {
        name: json::Json::NAME,
        description: "parse a JSON document and serialise it again",
        request: RequestKind::File { what: "a JSON document" },
        inputs: DOCUMENTS,
    },
    Info {
        name: compression::Compression::NAME,
        description: "deflate a file (level 6), inflate it back, check it",
        request: RequestKind::File { what: "any file (the inputs are the json documents)" },
        inputs: DOCUMENTS,
    },
    Info {
        name: pyaes::Pyaes::NAME,
        description: "AES-128-CTR in software: encrypt and decrypt a generated message, 100 rounds",
        request: RequestKind::Params { format: r#"{"length": <characters>, "iterations": <100>, "seed": <1>}"# },
        inputs: &[
            entry("A", "20,000 characters", br#"{"length":20000}"#),
            entry("B", "22,000 characters", br#"{"length":22000}"#),
            entry("1", "5,000 characters", br#"{"length":5000}"#),
            entry("2", "10,000 characters", br#"{"length":10000}"#),
            entry("3", "20,000 characters", br#"{"length":20000}"#),
            entry("4", "40,000 characters", br#"{"length":40000}"#),
            entry("5", "60,000 characters", br#"{"length":60000}"#),
            entry("6", "80,000 characters", br#"{"length":80000}"#),
        ],
    },
    Info {
        name: image::ImageRotate::NAME,
        description: "decode a JPEG photo, rotate it 90°, encode it as JPEG",
        request: RequestKind::File { what: "a JPEG photo" },
        inputs: PHOTOS,
    },
    Info {
        name: chameleon::Chameleon::NAME,
        description: "render an HTML table from a compiled template",
        request: RequestKind::Params { format: r#"{"rows": <n>, "cols": <n>}"# },
        inputs: &[
            entry("A", "100×300 table", br#"{"rows":100,"cols":300}"#),
            entry("B", "200×200 table", br#"{"rows":200,"cols":200}"#),
            entry("1", "100×100 table", br#"{"rows":100,"cols":100}"#),
            entry("2", "150×150 table", br#"{"rows":150,"cols":150}"#),
            entry("3", "200×200 table", br#"{"rows":200,"cols":200}"#),
            entry("4", "250×250 table", br#"{"rows":250,"cols":250}"#),
            entry("5", "300×300 table", br#"{"rows":300,"cols":300}"#),
            entry("6", "400×400 table", br#"{"rows":400,"cols":400}"#),
        ],
    },
    Info {
        name: matmul::Matmul::NAME,
        description: "multiply two seeded n×n matrices of f64 (cache-blocked GEMM)",
        request: RequestKind::Params { format: r#"{"n": <size>, "seed": <1>}"# },
        inputs: &[
            entry("A", "n = 1100", br#"{"n":1100}"#),
            entry("B", "n = 1200", br#"{"n":1200}"#),
            entry("1", "n = 500", br#"{"n":500}"#),
            entry("2", "n = 800", br#"{"n":800}"#),
            entry("3", "n = 1100", br#"{"n":1100}"#),
            entry("4", "n = 1400", br#"{"n":1400}"#),
            entry("5", "n = 1700", br#"{"n":1700}"#),
            entry("6", "n = 2000", br#"{"n":2000}"#),
        ],
    },
    Info {
        name: pagerank::Pagerank::NAME,
        description: "PageRank by power iteration on a seeded Barabási–Albert graph (10 edges per node)",
        request: RequestKind::Params { format: r#"{"nodes": <n>, "seed": <1>}"# },
        inputs: &[
            entry("A", "90,000 nodes", br#"{"nodes":90000}"#),
            entry("B", "100,000 nodes", br#"{"nodes":100000}"#),
            entry("1", "25,000 nodes", br#"{"nodes":25000}"#),
            entry("2", "50,000 nodes", br#"{"nodes":50000}"#),
            entry("3", "100,000 nodes", br#"{"nodes":100000}"#),
            entry("4", "200,000 nodes", br#"{"nodes":200000}"#),
            entry("5", "300,000 nodes", br#"{"nodes":300000}"#),
            entry("6", "400,000 nodes", br#"{"nodes":400000}"#),
        ],
    },
    Info {
        name: video::Video::NAME,
        description: "grayscale filter over every frame of a Motion-JPEG clip (stands in for ffmpeg)",
        request: RequestKind::File { what: "a Motion-JPEG clip (JPEG frames back to back)" },
        inputs: CLIPS,
    },
    Info {
        name: recognition::Recognition::NAME,
        description: "classify a JPEG photo with a ResNet-18-style network (45 MiB of weights)",
        request: RequestKind::File { what: "a JPEG photo" },
        inputs: PHOTOS,
    },
    Info {
        name: read_list::ReadList::NAME,
        description: "walk a linked list spread over 3/4 of guest memory (stride 512 bytes)",
        request: RequestKind::Params { format: r#"{"steps": <n>}"# },
        inputs: &[
            entry("A", "100,000 steps", br#"{"steps":100000}"#),
            entry("B", "200,000 steps", br#"{"steps":200000}"#),
            entry("1", "25,000 steps", br#"{"steps":25000}"#),
            entry("2", "50,000 steps", br#"{"steps":50000}"#),
            entry("3", "100,000 steps", br#"{"steps":100000}"#),
            entry("4", "200,000 steps", br#"{"steps":200000}"#),
            entry("5", "300,000 steps", br#"{"steps":300000}"#),
            big("6", "500,000 steps", br#"{"steps":500000}"#, 512),
        ],
    },
    Info {
        name: mmap::Mmap::NAME,
        description: "touch every 4 KiB page of fresh memory",
        request: RequestKind::Params { format: r#"{"mib": <n>}"# },
        inputs: &[
            big("A", "256 MiB", br#"{"mib":256}"#, 512),
            big("B", "512 MiB", br#"{"mib":512}"#, 1024),
            entry("1", "32 MiB", br#"{"mib":32}"#),
            entry("2", "64 MiB", br#"{"mib":64}"#),
            entry("3", "128 MiB", br#"{"mib":128}"#),
            big("4", "256 MiB", br#"{"mib":256}"#, 512),
            big("5", "512 MiB", br#"{"mib":512}"#, 1024),
            big("6", "768 MiB", br#"{"mib":768}"#, 1024),
        ],
    },
];

/// Looks up a built-in function by name.
pub fn info(name: &str) -> Option<&'static Info> {
    CATALOG.iter().find(|i| i.name == name)
}

/// The request bytes of `function`'s input `input` (`A`, `B`, `1`..`6`).
pub fn input(function: &str, input: &str) -> Option<&'static [u8]> {
    info(function)?.input(input).map(|i| i.request)
}
