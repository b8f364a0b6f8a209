//! Native reference runs (host only): the same code the guests run, called directly, to
//! check a guest's digest against.

use crate::{
    chameleon, compression, handle, hello, image, json, matmul, mmap, pagerank, pyaes, read_list, recognition, video,
    Env, Function,
};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// One invocation of an initialised function: request bytes → response bytes.
type Invoke = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

/// A function initialised on the host, ready for any number of invocations (like a warm VM).
pub struct Native {
    name: &'static str,
    invoke: Invoke,
}

impl Native {
    fn new<F: Function + 'static>(env: &Env) -> Self {
        let mut state = F::init(env);
        Native { name: F::NAME, invoke: Box::new(move |request| handle::<F>(&mut state, request)) }
    }

    /// The function's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs one invocation: the response bytes a guest would return.
    pub fn invoke(&mut self, request: &[u8]) -> Vec<u8> {
        (self.invoke)(request)
    }
}

/// The named built-in function, initialised with [`Env::NATIVE`]; `None` if there is no
/// such function.
pub fn native(name: &str) -> Option<Native> {
    let env = &Env::NATIVE;
    Some(match name {
        hello::Hello::NAME => Native::new::<hello::Hello>(env),
        json::Json::NAME => Native::new::<json::Json>(env),
        compression::Compression::NAME => Native::new::<compression::Compression>(env),
        pyaes::Pyaes::NAME => Native::new::<pyaes::Pyaes>(env),
        image::ImageRotate::NAME => Native::new::<image::ImageRotate>(env),
        chameleon::Chameleon::NAME => Native::new::<chameleon::Chameleon>(env),
        matmul::Matmul::NAME => Native::new::<matmul::Matmul>(env),
        pagerank::Pagerank::NAME => Native::new::<pagerank::Pagerank>(env),
        video::Video::NAME => Native::new::<video::Video>(env),
        recognition::Recognition::NAME => Native::new::<recognition::Recognition>(env),
        read_list::ReadList::NAME => Native::new::<read_list::ReadList>(env),
        mmap::Mmap::NAME => Native::new::<mmap::Mmap>(env),
        _ => return None,
    })
}

/// Runs `init` and one invocation of the named function natively (on the host), returning
/// the response bytes. `None` if there is no such function.
pub fn run_native(name: &str, request: &[u8]) -> Option<Vec<u8>> {
    native(name).map(|mut f| f.invoke(request))
}
