//! `hello`: answers at once, whatever the request (the restore floor: a SnapStart of
//! `hello` is all restore and no work).

use crate::util::digest;
use crate::{Env, Function};
use alloc::string::String;
use serde::Serialize;

/// Marker type of the `hello` function.
pub struct Hello;

/// What `hello` answers.
pub const GREETING: &str = "hello, world";

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the greeting.
    pub digest: String,
    /// The greeting.
    pub greeting: &'static str,
}

impl Function for Hello {
    const NAME: &'static str = "hello";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), _request: &[u8]) -> Result<Response, String> {
        Ok(Response { digest: digest([GREETING.as_bytes()]), greeting: GREETING })
    }
}
