//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/xenapi_*.rs`) and the corpus
//! replay test: each feeds arbitrary bytes to every decoder of one format and checks that what
//! decodes also re-encodes into something that decodes again.

use bytes::BytesMut;

use crate::chunked::FrameDecoder;
use crate::codec::{Response, jsonrpc, xmlrpc};
use crate::error::Error;

/// XML-RPC: server-side call decoding, client-side response and task-result decoding.
pub fn xmlrpc(data: &[u8]) -> Result<(), Error> {
    let call = xmlrpc::decode_call(data);
    if let Ok(call) = &call {
        xmlrpc::decode_call(&xmlrpc::encode_call(&call.method, &call.params))?;
    }
    let response = xmlrpc::decode_response(data);
    if let Ok(Response::Success(value)) = &response {
        // Re-encoded in xapi's style (member names unescaped) it must parse again unless a
        // name holds markup, which xapi itself cannot emit correctly.
        let names_plain = !format!("{value:?}").contains(['<', '&']);
        if names_plain {
            xmlrpc::decode_response(&xmlrpc::encode_response(&Response::Success(value.clone())))?;
        }
    }
    let _ = xmlrpc::decode_task_result(&String::from_utf8_lossy(data));
    call.map(|_| ()).or(response.map(|_| ()))
}

/// JSON-RPC: server-side call decoding and client-side response decoding.
pub fn jsonrpc(data: &[u8]) -> Result<(), Error> {
    let call = jsonrpc::decode_call(data);
    if let Ok(call) = &call {
        let body =
            jsonrpc::encode_call(call.version, &call.id, &call.call.method, &call.call.params);
        jsonrpc::decode_call(&body)?;
    }
    let reply = jsonrpc::decode_response(data);
    if let Ok(reply) = &reply {
        let id = reply.id.clone().unwrap_or(jsonrpc::Id::Int(0));
        jsonrpc::decode_response(&jsonrpc::encode_response(
            jsonrpc::Version::V2,
            &id,
            &reply.response,
        ))?;
    }
    call.map(|_| ()).or(reply.map(|_| ()))
}

/// The `chunked` frame decoder, fed in two pieces split at the first byte's value.
pub fn chunked(data: &[u8]) -> Result<(), Error> {
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (first, second) = data.split_at(split);
    let mut decoder = FrameDecoder::new();
    let mut buffer = BytesMut::from(first);
    while decoder.decode(&mut buffer)?.is_some() {}
    buffer.extend_from_slice(second);
    while decoder.decode(&mut buffer)?.is_some() {}
    Ok(())
}
