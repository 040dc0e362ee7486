import SwitchboardCore
import SwitchboardTesting
import Testing

@testable import SwitchboardProtocol

@Suite("Protocol codec")
struct CodecTests {
    func decode(_ text: String) -> Result<ClientRequest, ProtocolError> {
        ClientRequest.decode(Array(text.utf8))
    }

    @Test func decodesEveryCommand() throws {
        #expect(
            try decode(#"{"type":"join","room":"lobby","id":1}"#).get() == ClientRequest(id: .integer("1"), command: .join(room: "lobby")))
        #expect(
            try decode(#"{"type":"leave","room":"a/b:c@d.e-f_g","id":"x"}"#).get()
                == ClientRequest(id: .string("x"), command: .leave(room: "a/b:c@d.e-f_g")))
        #expect(
            try decode(#"{"type":"publish","room":"r","data":{"a":[1,2.5e3,"\u00e9"]}}"#).get().command
                == .publish(room: "r", data: RawJSON(#"{"a":[1,2.5e3,"\u00e9"]}"#)))
        #expect(try decode(#"{"type":"send","to":"bob","data":null}"#).get().command == .send(to: "bob", data: RawJSON("null")))
        #expect(try decode(#"{"data" : [ ] , "type":"broadcast"}"#).get().command == .broadcast(data: RawJSON("[ ]")))
        #expect(try decode(#"{"type":"presence","room":"r"}"#).get().command == .presence(room: "r"))
        #expect(try decode(#"{"type":"ping","unknown":{"deep":[true,false,null]}}"#).get() == ClientRequest(id: nil, command: .ping))
    }

    @Test func dataIsKeptByteForByte() throws {
        let data = #"{ "n": 1.50, "s": "\ud83d\ude00 \"q\"", "z": -0 }"#
        let request = try decode(#"{"type":"broadcast","data":"# + data + "}").get()
        #expect(request.command == .broadcast(data: RawJSON(data)))
    }

    @Test(arguments: [
        ("not json", "bad_request"),
        ("[1,2]", "bad_request"),
        ("\"join\"", "bad_request"),
        ("{}", "bad_request"),
        (#"{"type":5}"#, "bad_request"),
        (#"{"type":"dance"}"#, "bad_request"),
        (#"{"type":"join"}"#, "bad_request"),
        (#"{"type":"join","room":7}"#, "bad_request"),
        (#"{"type":"publish","room":"r"}"#, "bad_request"),
        (#"{"type":"join","room":"has space"}"#, "invalid_name"),
        (#"{"type":"join","room":""}"#, "invalid_name"),
        (#"{"type":"send","to":"é","data":1}"#, "invalid_name"),
        (#"{"type":"ping","id":1.5}"#, "bad_request"),
        (#"{"type":"ping","id":[1]}"#, "bad_request"),
        (#"{"type":"ping"} trailing"#, "bad_request"),
        (#"{"type":"ping",}"#, "bad_request"),
        (#"{"type":"publish","room":"r","data":tru}"#, "bad_request"),
        (#"{"type":"publish","room":"r","data":"\x"}"#, "bad_request"),
        (#"{"type":"publish","room":"r","data":01}"#, "bad_request"),
    ])
    func refusesBadFrames(frame: String, code: String) {
        guard case .failure(let error) = decode(frame) else {
            Issue.record("accepted \(frame)")
            return
        }
        #expect(error.code.rawValue == code, "\(frame): \(error.message)")
    }

    @Test func errorsKeepTheCommandID() {
        guard case .failure(let error) = decode(#"{"id":"k","type":"join","room":"a b"}"#) else {
            Issue.record("accepted a bad room")
            return
        }
        #expect(error.id == .string("k"))
        #expect(error.code == .invalidName)
    }

    @Test func nameRule() {
        #expect(Name.isValid("a"))
        #expect(Name.isValid(String(repeating: "x", count: 128)))
        #expect(!Name.isValid(String(repeating: "x", count: 129)))
        #expect(!Name.isValid(""))
        #expect(!Name.isValid("tab\t"))
        #expect(Name.isValid("AZaz09_.:@/-"))
    }

    @Test func deepNestingIsRefusedNotCrashed() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        guard case .failure(let error) = decode(#"{"type":"broadcast","data":"# + deep + "}") else {
            Issue.record("accepted 100000 levels of nesting")
            return
        }
        #expect(error.code == .badRequest)
    }

    /// Random and truncated input: the decoder must answer every one with a result, never crash
    /// or hang, and accept only what a valid frame's prefix cannot be.
    @Test func survivesGeneratedInput() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]",:\ "typejoinroomdata0123456789.eE+-truefalsenull\u"#.utf8) + [0x00, 0xFF, 0x0A]
        let valid = Array(#"{"type":"publish","room":"r","id":3,"data":{"a":[1,"x",null,true]}}"#.utf8)
        for round in 0..<5000 {
            var input: [UInt8]
            switch round % 3 {
            case 0: input = (0..<Int.random(in: 0...64, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            case 1: input = Array(valid.prefix(Int.random(in: 0..<valid.count, using: &generator)))
            default:
                input = valid
                input[Int.random(in: 0..<input.count, using: &generator)] = alphabet.randomElement(using: &generator)!
            }
            if case .success = ClientRequest.decode(input), round % 3 == 1 {
                Issue.record("a truncated frame was accepted: \(String(decoding: input, as: UTF8.self))")
            }
        }
        #expect(try ClientRequest.decode(valid).get().id == .integer("3"))
    }

    @Test func serverFramesAreValidJSON() throws {
        let envelope = Envelope(id: "m1", from: "server", address: .room("r"), data: RawJSON(#"{"k":"v"}"#), timestamp: 42)
        let message = try JSONValue.parse(ServerFrame.message(envelope))
        #expect(message["type"] == .string("message"))
        #expect(message["room"] == .string("r"))
        #expect(message["data"]?["k"] == .string("v"))
        #expect(message["ts"]?.int == 42)
        let direct = try JSONValue.parse(
            ServerFrame.message(Envelope(id: "m2", from: "a", address: .user("b"), data: RawJSON("1"), timestamp: 1)))
        #expect(direct["to"] == .string("b"))
        let broadcast = try JSONValue.parse(
            ServerFrame.message(Envelope(id: "m3", from: "a", address: .everyone, data: RawJSON("1"), timestamp: 1)))
        #expect(broadcast["broadcast"] == .bool(true))
        let error = try JSONValue.parse(
            ServerFrame.error(ProtocolError(id: .integer("7"), code: .offline, message: "quote \" and \n newline")))
        #expect(error["id"]?.int == 7)
        #expect(error["message"] == .string("quote \" and \n newline"))
        #expect(try JSONValue.parse(ServerFrame.ok(id: nil))["id"] == nil)
    }
}
