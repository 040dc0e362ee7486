import AMQP
import Foundation
import Testing

/// The AMQP 0-9-1 codec on its own: every method and property round-trips, the kept corpus of
/// malformed input gets its errors, every split of valid input parses the same, and random or
/// mutated bytes never crash the parser.
struct AMQPCodecTests {
    static let methods: [AMQPMethod] = [
        .connectionStart(
            versionMajor: 0, versionMinor: 9,
            serverProperties: ["product": .string(Array("RabbitMQ".utf8)), "capabilities": .table(["publisher_confirms": .bool(true)])],
            mechanisms: "PLAIN AMQPLAIN", locales: "en_US"),
        .connectionStartOk(
            clientProperties: ["product": .string(Array("switchboard".utf8))], mechanism: "PLAIN", response: [0, 103, 0, 103],
            locale: "en_US"),
        .connectionSecure(challenge: [1, 2]),
        .connectionTune(channelMax: 2047, frameMax: 131072, heartbeat: 60),
        .connectionTuneOk(channelMax: 1, frameMax: 131072, heartbeat: 10),
        .connectionOpen(virtualHost: "/"),
        .connectionOpenOk,
        .connectionClose(
            AMQPClose(replyCode: 320, replyText: "CONNECTION_FORCED - broker forced connection closure", classID: 0, methodID: 0)),
        .connectionCloseOk,
        .connectionBlocked(reason: "low on memory"),
        .connectionUnblocked,
        .channelOpen, .channelOpenOk,
        .channelClose(AMQPClose(replyCode: 404, replyText: "NOT_FOUND", classID: 50, methodID: 20)),
        .channelCloseOk,
        .exchangeDeclare(exchange: "switchboard", type: "topic", passive: false, durable: false, autoDelete: true, arguments: [:]),
        .exchangeDeclareOk,
        .queueDeclare(
            queue: "", passive: false, durable: false, exclusive: true, autoDelete: true, arguments: ["x-max-length": .int32(1000)]),
        .queueDeclareOk(queue: "amq.gen-abc", messageCount: 0, consumerCount: 0),
        .queueBind(queue: "q", exchange: "switchboard", routingKey: "r.lobby", arguments: [:]),
        .queueBindOk,
        .queueUnbind(queue: "q", exchange: "switchboard", routingKey: "r.lobby", arguments: [:]),
        .queueUnbindOk,
        .basicQos(prefetchSize: 0, prefetchCount: 1000, global: false),
        .basicQosOk,
        .basicConsume(queue: "q", consumerTag: "n1", noAck: true, exclusive: true, arguments: [:]),
        .basicConsumeOk(consumerTag: "n1"),
        .basicPublish(exchange: "switchboard", routingKey: "u.alice", mandatory: false),
        .basicReturn(replyCode: 312, replyText: "NO_ROUTE", exchange: "switchboard", routingKey: "r.x"),
        .basicDeliver(consumerTag: "n1", deliveryTag: 1 << 40, redelivered: true, exchange: "switchboard", routingKey: "all"),
        .basicAck(deliveryTag: 7, multiple: true),
        .basicNack(deliveryTag: 8, multiple: false, requeue: true),
        .confirmSelect, .confirmSelectOk,
    ]

    static func parseAll(_ bytes: [UInt8], frameMax: UInt32 = 131072) throws(AMQPError) -> [AMQPFrame] {
        var parser = AMQPFrameParser(frameMax: frameMax)
        parser.append(bytes)
        var frames: [AMQPFrame] = []
        while let frame = try parser.next() { frames.append(frame) }
        return frames
    }

    @Test func everyMethodRoundTrips() throws {
        for (index, method) in Self.methods.enumerated() {
            let frame = AMQPFrame.method(channel: UInt16(index), method)
            #expect(try Self.parseAll(frame.encoded()) == [frame], "\(method)")
        }
    }

    @Test func contentHeadersAndBodiesRoundTrip() throws {
        var properties = AMQPProperties(
            contentType: "application/json", headers: ["sb-from": .string(Array("alice".utf8))], deliveryMode: 1, messageID: "m-1")
        properties.timestamp = 1_796_000_000
        properties.appID = "switchboard"
        properties.priority = 3
        properties.expiration = "60000"
        let frames: [AMQPFrame] = [
            .method(channel: 1, .basicPublish(exchange: "switchboard", routingKey: "r.lobby", mandatory: false)),
            .header(channel: 1, AMQPContentHeader(bodySize: 5, properties: properties)),
            .body(channel: 1, Array("hello".utf8)),
            .heartbeat,
            .header(channel: 2, AMQPContentHeader(bodySize: 0)),
        ]
        #expect(try Self.parseAll(frames.flatMap { $0.encoded() }) == frames)
    }

    @Test func everyFieldTypeRoundTrips() throws {
        let table: AMQPTable = [
            "t": .bool(true), "b": .int8(-3), "B": .uint8(250), "s": .int16(-300), "u": .uint16(65000), "I": .int32(-70000),
            "i": .uint32(4_000_000_000), "l": .int64(-1 << 40), "f": .float(1.5), "d": .double(-2.25), "D": .decimal(scale: 2, value: 1234),
            "S": .string(Array("text".utf8)), "x": .bytes([0, 255]), "A": .array([.int32(1), .string([]), .array([.void])]),
            "T": .timestamp(1_700_000_000), "F": .table(["inner": .bool(false)]), "V": .void,
        ]
        let method = AMQPMethod.queueDeclare(
            queue: "q", passive: true, durable: true, exclusive: false, autoDelete: false, arguments: table)
        #expect(try Self.parseAll(AMQPFrame.method(channel: 0, method).encoded()) == [.method(channel: 0, method)])
    }

    @Test func aMethodWeDoNotKnowIsNamedNotGuessed() throws {
        var payload = AMQPWriter()
        payload.short(90)  // tx
        payload.short(10)  // select
        var frame = AMQPWriter()
        frame.octet(1)
        frame.short(3)
        frame.longBytes(payload.bytes)
        frame.octet(0xCE)
        #expect(try Self.parseAll(frame.bytes) == [.method(channel: 3, .unknown(classID: 90, methodID: 10))])
    }

    @Test func theKeptCorpusGetsItsErrors() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/malformed-frames.txt")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.count >= 10)
        for line in lines {
            let parts = line.components(separatedBy: " => ")
            try #require(parts.count == 2, "\(line)")
            let expected = parts[1].components(separatedBy: "  # ")[0]
            #expect(throws: AMQPError(expected), "\(line)") { _ = try Self.parseAll(Self.hex(parts[0]), frameMax: 4096) }
        }
    }

    @Test func aFailedParserStaysFailed() throws {
        var parser = AMQPFrameParser()
        parser.append(Self.hex("09000000000000ce") + AMQPFrame.heartbeat.encoded())
        #expect(throws: AMQPError.self) { _ = try parser.next() }
        #expect(throws: AMQPError.self) { _ = try parser.next() }
    }

    /// Every way of cutting valid input in two parses the same as the whole.
    @Test func everySplitParsesTheSame() throws {
        let frames: [AMQPFrame] = [
            .method(channel: 0, Self.methods[0]), .heartbeat,
            .method(channel: 1, .basicDeliver(consumerTag: "c", deliveryTag: 9, redelivered: false, exchange: "e", routingKey: "k")),
            .header(channel: 1, AMQPContentHeader(bodySize: 3, properties: AMQPProperties(contentType: "application/json"))),
            .body(channel: 1, [1, 0xCE, 3]),
        ]
        let input = frames.flatMap { $0.encoded() }
        for cut in 0...input.count {
            var parser = AMQPFrameParser()
            var parsed: [AMQPFrame] = []
            parser.append(input[..<cut])
            while let frame = try parser.next() { parsed.append(frame) }
            parser.append(input[cut...])
            while let frame = try parser.next() { parsed.append(frame) }
            #expect(parsed == frames, "cut at \(cut)")
            #expect(parser.pendingBytes == 0)
        }
    }

    /// Random bytes and mutated valid frames, fed a byte at a time, never crash the parser.
    @Test func fuzzing() throws {
        let seeds =
            Self.methods.map { AMQPFrame.method(channel: 1, $0).encoded() }
            + [
                AMQPFrame.header(
                    channel: 1, AMQPContentHeader(bodySize: 2, properties: AMQPProperties(headers: ["a": .array([.table([:])])]))
                ).encoded()
            ]
        var generator = SystemRandomNumberGenerator()
        let budget = Double(ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_SECONDS"] ?? "") ?? 1
        let deadline = ContinuousClock.now + .milliseconds(Int(budget * 1000))
        var rounds = 0
        while ContinuousClock.now < deadline {
            rounds += 1
            var bytes = seeds.randomElement(using: &generator)!
            if rounds % 4 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                for _ in 0..<Int.random(in: 1...3, using: &generator) where !bytes.isEmpty {
                    let index = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0...2, using: &generator) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.remove(at: index)
                    default: bytes.insert([0, 0xFF, 0xCE, 0x46].randomElement(using: &generator)!, at: index)
                    }
                }
            }
            var parser = AMQPFrameParser(frameMax: 4096)
            for byte in bytes {
                parser.append(CollectionOfOne(byte))
                do {
                    while try parser.next() != nil {}
                } catch {
                    break
                }
            }
        }
        #expect(rounds > 100)
    }

    static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8)
        return stride(from: 0, to: digits.count - 1, by: 2).compactMap {
            UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)
        }
    }
}
