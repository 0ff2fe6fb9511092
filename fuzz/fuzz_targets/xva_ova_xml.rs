//! Fuzzes the ova.xml parser (`xva::model::OvaXml::parse`) and the XML-RPC value parser; what
//! parses must serialise to something that parses again to the same serialisation.
#![no_main]

use xva::model::OvaXml;
use xva::model::value::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(value) = Value::parse(data) {
        let xml = value.to_xml();
        let again = Value::parse(xml.as_bytes()).expect("our own XML-RPC parses");
        assert_eq!(again.to_xml(), xml);
    }
    if let Ok(ova) = OvaXml::parse(data) {
        let xml = ova.to_xml();
        let again = OvaXml::parse(xml.as_bytes()).expect("our own ova.xml parses");
        assert_eq!(again.to_xml(), xml);
        let _ = ova.streamed_disks();
        let _ = ova.check_importable();
    }
});
