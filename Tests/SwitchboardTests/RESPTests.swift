import Logging
import NIOCore
import NIOPosix
import SwitchboardTesting
import Synchronization
import Testing

@testable import RESP

@Suite("RESP parser")
struct RESPParserTests {
    static let samples: [(String, RESPValue)] = [
        ("+OK\r\n", .simpleString("OK")),
        ("-ERR wrong\r\n", .error("ERR wrong")),
        (":-42\r\n", .integer(-42)),
        ("$5\r\nhe\r\no\r\n", .bulkString(Array("he\r\no".utf8))),
        ("$0\r\n\r\n", .bulkString([])),
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("*3\r\n:1\r\n$1\r\na\r\n*1\r\n+x\r\n", .array([.integer(1), .bulkString([97]), .array([.simpleString("x")])])),
        ("_\r\n", .null),
        ("#t\r\n", .boolean(true)),
        (",3.5\r\n", .double(3.5)),
        (",-inf\r\n", .double(-.infinity)),
        ("(3492890328409238509324850943850943825024385\r\n", .bigNumber("3492890328409238509324850943850943825024385")),
        ("!9\r\nSYNTAX no\r\n", .error("SYNTAX no")),
        ("=8\r\ntxt:Some\r\n", .verbatim("Some")),
        ("%1\r\n+k\r\n:1\r\n", .map([RESPPair(key: .simpleString("k"), value: .integer(1))])),
        ("~2\r\n+a\r\n+b\r\n", .set([.simpleString("a"), .simpleString("b")])),
        (
            ">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            .push([.bulkString(Array("smessage".utf8)), .bulkString(Array("ch".utf8)), .bulkString(Array("hi".utf8))])
        ),
        ("|1\r\n+ttl\r\n:3\r\n:7\r\n", .integer(7)),
        (":-9223372036854775808\r\n", .integer(.min)),
        (":9223372036854775807\r\n", .integer(.max)),
        (":0\r\n", .integer(0)),
    ]

    func parseAll(_ chunks: [[UInt8]]) throws -> [RESPValue] {
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        for chunk in chunks {
            buffer.writeBytes(chunk)
            while let value = try RESPParser().parse(&buffer) { values.append(value) }
        }
        #expect(buffer.readableBytes == 0)
        return values
    }

    @Test func parsesEveryType() throws {
        for (text, expected) in Self.samples {
            #expect(try parseAll([Array(text.utf8)]) == [expected], "\(text)")
        }
    }

    /// Every split of every sample into two reads parses to the same value.
    @Test func everySplitParsesTheSame() throws {
        for (text, expected) in Self.samples {
            let bytes = Array(text.utf8)
            for cut in 0...bytes.count {
                #expect(try parseAll([Array(bytes[..<cut]), Array(bytes[cut...])]) == [expected], "\(text) cut at \(cut)")
            }
            // and byte by byte
            #expect(try parseAll(bytes.map { [$0] }) == [expected])
        }
        let stream = Self.samples.flatMap { Array($0.0.utf8) }
        #expect(try parseAll(stream.map { [$0] }) == Self.samples.map(\.1))
    }

    @Test func truncatedInputWaitsAndRandomInputNeverCrashes() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("+-:$*_#,(!=%~>|0123456789\r\n-abc".utf8)
        for (text, _) in Self.samples {
            let bytes = Array(text.utf8)
            for cut in 0..<bytes.count {
                var buffer = ByteBuffer(bytes: bytes[..<cut])
                #expect((try? RESPParser().parse(&buffer)) == .some(nil), "a truncated \(text) must ask for more")
            }
        }
        for _ in 0..<20000 {
            var buffer = ByteBuffer(
                bytes: (0..<Int.random(in: 1...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            while (try? RESPParser().parse(&buffer)) != nil, buffer.readableBytes > 0 {}
        }
        for bad in [
            ":\r\n", ":-\r\n", ":12a\r\n", ": 1\r\n", ":+1\r\n", ":9223372036854775808\r\n", ":-9223372036854775809\r\n", "*1x\r\n",
        ] {
            var buffer = ByteBuffer(string: bad)
            #expect(throws: RESPProtocolError.self, "\(bad)") { try RESPParser().parse(&buffer) }
        }
        var hostile = ByteBuffer(string: "$999999999999\r\n")
        #expect(throws: RESPProtocolError.self) { try RESPParser().parse(&hostile) }
        var deep = ByteBuffer(string: String(repeating: "*1\r\n", count: 1000) + ":1\r\n")
        #expect(throws: RESPProtocolError.self) { try RESPParser().parse(&deep) }
    }

    @Test func encodesCommands() throws {
        var buffer = ByteBuffer()
        RESPEncoder.encode(["SET", "k", RESPArgument(bytes: [0, 13, 10])], into: &buffer)
        #expect(String(buffer: buffer) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\u{0}\r\n\r\n")
        // Lengths of every number of digits, and the empty argument, parse back as written.
        for length in [0, 9, 10, 99, 100, 12345] {
            let arguments = Array(repeating: RESPArgument(bytes: Array(repeating: 120, count: length)), count: length % 11 + 1)
            var encoded = ByteBuffer()
            RESPEncoder.encode(arguments, into: &encoded)
            #expect(String(buffer: encoded).hasPrefix("*\(arguments.count)\r\n$\(length)\r\n"))
            #expect(try RESPParser().parse(&encoded) == .array(arguments.map { .bulkString($0.bytes) }))
        }
        // Text is written as its UTF-8 bytes, and equals the same bytes given as bytes.
        var text = ByteBuffer()
        RESPEncoder.encode(["é", 42], into: &text)
        #expect(String(buffer: text) == "*2\r\n$2\r\né\r\n$2\r\n42\r\n")
        #expect(RESPArgument("é") == RESPArgument(bytes: [0xC3, 0xA9]))
        #expect(Set([RESPArgument("a"), RESPArgument(bytes: [97])]).count == 1)
    }
}

// One test at a time: the 3000-channel and 4000-command tests load the process's event loops,
// and beside them, under a fully loaded CI machine, a plain connect once took over 2 s.
@Suite("RESP client against a real redis-server", .serialized)
struct RedisClientTests {
    var logger: Logger {
        var logger = Logger(label: "redis-test")
        logger.logLevel = .critical
        return logger
    }

    @Test func commandsPipeliningAndErrors() async throws {
        try await withRedis { redis in
            let connection = try await RedisConnection.local(port: redis.port)
            defer { Task { await connection.close() } }
            #expect(try await connection.send(["SET", "k", "v"]) == .simpleString("OK"))
            #expect(try await connection.send(["GET", "k"]).string == "v")
            await #expect(throws: RedisError.self) { try await connection.send(["INCR", "k"]) }
            // Many commands in flight on one connection come back in order.
            try await withThrowingTaskGroup(of: (Int, Int64?).self) { group in
                for n in 0..<500 {
                    group.addTask { (n, try await connection.send(["INCRBY", RESPArgument("counter:\(n)"), RESPArgument(n)]).int) }
                }
                for try await (n, value) in group { #expect(value == Int64(n)) }
            }
            // RESP3: HELLO answers a map.
            guard case .map(let fields) = try await connection.send(["HELLO", "3"]) else {
                Issue.record("HELLO 3 did not answer a map")
                return
            }
            #expect(fields.contains { $0.key.string == "proto" && $0.value == .integer(3) })
            #expect(try await connection.send(["GET", "missing"]) == .null)
        }
    }

    /// Commands queued from many tasks at once go out in batches (one write per loop turn):
    /// each caller's commands keep their order, and every reply reaches its own command.
    @Test func commandsQueuedFromManyTasksKeepEachCallersOrder() async throws {
        try await withRedis { redis in
            let connection = try await RedisConnection.local(port: redis.port)
            defer { Task { await connection.close() } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<20 {
                    group.addTask {
                        let key = RESPArgument("list:\(caller)")
                        let replies = (0..<200).map { connection.enqueue(["RPUSH", key, RESPArgument($0)]) }
                        for (index, reply) in replies.enumerated() {
                            #expect(try await reply.get() == .integer(Int64(index + 1)), "RPUSH answers the list's new length")
                        }
                        let stored = try await connection.send(["LRANGE", key, "0", "-1"])
                        #expect(stored.elements?.compactMap(\.string) == (0..<200).map(String.init))
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    /// A pipeline's replies come back together and in order, error replies among them as
    /// values; batches from many tasks at once each get their own; a batch whose connection
    /// stops answering throws, once, with the timeout.
    @Test func aPipelineAnswersItsCommandsTogether() async throws {
        try await withRedis { redis in
            let connection = try await RedisConnection.local(port: redis.port)
            defer { Task { await connection.close() } }
            let replies = try await connection.pipeline([["SET", "p", "1"], ["INCR", "p"], ["HGET", "p", "x"], ["GET", "p"]])
            #expect(replies.count == 4)
            #expect(replies[0] == .simpleString("OK") && replies[1] == .integer(2) && replies[3].string == "2")
            guard case .error(let message) = replies[2] else {
                Issue.record("HGET on a string answered \(replies[2])")
                return
            }
            #expect(message.hasPrefix("WRONGTYPE"))
            #expect(try await connection.pipeline([]).isEmpty)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<20 {
                    group.addTask {
                        let key = RESPArgument("batch:\(caller)")
                        let replies = try await connection.pipeline((0..<50).map { ["RPUSH", key, RESPArgument($0)] })
                        #expect(replies == (1...50).map { .integer(Int64($0)) }, "RPUSH answers the list's new length")
                    }
                }
                try await group.waitForAll()
            }
            let pauser = try await RedisConnection.local(port: redis.port)
            let slow = try await RedisConnection.local(port: redis.port, commandTimeout: .milliseconds(300))
            defer { Task { await pauser.close() } }
            try await pauser.send(["CLIENT", "PAUSE", "1500", "ALL"])
            await #expect(throws: RedisError.timedOut) { try await slow.pipeline([["GET", "a"], ["GET", "b"], ["GET", "c"]]) }
        }
    }

    /// Subscriptions made while the subscriber's connection is coming up are all in effect once
    /// it is: none falls between the channels it subscribes again and the connection being
    /// offered (a Redis Cluster node lost about 300 of 20000 that way when a shard's subscriber
    /// started under load). On one Redis here the window is too short for this test to hit it
    /// without the fix; the 10k-rooms bench on three masters did.
    @Test func subscriptionsMadeWhileTheConnectionComesUpAreNotLost() async throws {
        let redis = RedisServer(port: try await freePorts(1))
        let subscriber = RedisSubscriber(configuration: redis.configuration, logger: logger)
        let running = Task { await subscriber.run() }
        defer { running.cancel() }
        // Many channels to subscribe again make the coming-up long; more are made meanwhile.
        let early = (0..<3000).map { "early:{\($0)}" }
        for channel in early { try await subscriber.subscribe(channel) }
        try await redis.start()
        defer { Task { try? await redis.stop() } }
        var late: [String] = []
        var afterConnected = 0
        while afterConnected < 50, late.count < 5000 {
            let channel = "late:{\(late.count)}"
            try await subscriber.subscribe(channel)
            late.append(channel)
            if subscriber.isConnected { afterConnected += 1 }
        }
        try await subscriber.barrier()
        let probe = try await RedisConnection.local(port: redis.port)
        defer { Task { await probe.close() } }
        let reply = try await probe.send(["PUBSUB", "SHARDNUMSUB"] + late.map { RESPArgument($0) })
        // A flat list of name, count (RESP2 on this connection).
        let counts = (reply.elements ?? []).enumerated().filter { $0.offset % 2 == 1 }.compactMap { $0.element.int }
        #expect(
            counts.count == late.count && counts.allSatisfy { $0 == 1 },
            "\(counts.filter { $0 != 1 }.count) of \(late.count) not subscribed")
        await subscriber.stop()
    }

    /// A subscription whose confirmation does not come in time fails alone (its own timer, no
    /// task): the connection stays, and the subscription takes effect once Redis answers.
    @Test func anUnconfirmedSubscriptionTimesOutAloneAndTakesEffectLater() async throws {
        try await withRedis { redis in
            let subscriber = RedisSubscriber(configuration: redis.configuration, logger: logger, confirmationTimeout: .milliseconds(300))
            let running = Task { await subscriber.run() }
            defer {
                Task {
                    await subscriber.stop(); await running.value
                }
            }
            await subscriber.waitUntilConnected()
            var iterator = subscriber.events.makeAsyncIterator()
            #expect(await iterator.next() == .resubscribing, "the first connection's own start")
            let pauser = try await RedisConnection.local(port: redis.port)
            let publisher = try await RedisConnection.local(port: redis.port)
            defer {
                Task {
                    await pauser.close(); await publisher.close()
                }
            }
            // Redis holds every command for 1.5 s; the confirmation's wait ends at 300 ms.
            try await pauser.send(["CLIENT", "PAUSE", "1500", "ALL"])
            await #expect(throws: RedisError.timedOut) { try await subscriber.subscribe("sb:{r:held}") }
            #expect(subscriber.isConnected)
            // Once the pause is over, Redis runs the held subscription on the same connection.
            try await eventually("the held subscription to take effect", timeout: .seconds(20)) {
                try await publisher.send(["PUBSUB", "SHARDNUMSUB", "sb:{r:held}"]).elements?.last == .integer(1)
            }
            #expect(try await publisher.send(["SPUBLISH", "sb:{r:held}", "late"]) == .integer(1))
            #expect(await iterator.next() == .message(RedisMessage(channel: "sb:{r:held}", payload: Array("late".utf8))))
        }
    }

    @Test func subscriberReceivesAndResubscribesAfterARestart() async throws {
        try await withRedis { redis in
            let subscriber = RedisSubscriber(configuration: redis.configuration, logger: logger)
            let publisher = RedisClient(configuration: redis.configuration, logger: logger)
            let tasks = [Task { await subscriber.run() }, Task { await publisher.run() }]
            defer {
                Task {
                    await subscriber.stop()
                    await publisher.stop()
                    for task in tasks { await task.value }
                }
            }
            await subscriber.client.waitUntilConnected()
            await publisher.waitUntilConnected()
            try await subscriber.subscribe("sb:{r:lobby}")
            #expect(try await publisher.send(["SPUBLISH", "sb:{r:lobby}", "one"]) == .integer(1))
            var iterator = subscriber.events.makeAsyncIterator()
            #expect(await iterator.next() == .resubscribing, "the first connection subscribes too")
            #expect(await iterator.next() == .message(RedisMessage(channel: "sb:{r:lobby}", payload: Array("one".utf8))))

            // Redis goes away: commands fail fast, nothing crashes; it comes back: all resumes.
            try await redis.stop()
            try await eventually("the client to notice") { !publisher.isConnected }
            await #expect(throws: RedisError.unavailable) { try await publisher.send(["PING"]) }
            try await redis.start()
            await publisher.waitUntilConnected()
            try await eventually("the subscription to be back") {
                (try await publisher.send(["PUBSUB", "SHARDNUMSUB", "sb:{r:lobby}"]).elements?.last?.int) == 1
            }
            try await publisher.send(["SPUBLISH", "sb:{r:lobby}", "two"])
            #expect(await iterator.next() == .resubscribing, "the reconnection is told, before what it brings")
            #expect(await iterator.next() == .message(RedisMessage(channel: "sb:{r:lobby}", payload: Array("two".utf8))))

            try await subscriber.unsubscribe("sb:{r:lobby}")
            #expect(try await publisher.send(["SPUBLISH", "sb:{r:lobby}", "three"]) == .integer(0))
        }
    }

    /// Commands sent behind a (un)subscription on the subscriber's own connection run once it
    /// is in effect, and answer in the same round trip: a message published by a command right
    /// behind the subscription reaches it. A change that changes nothing sends nothing (nil).
    @Test func commandsRideBehindASubscriptionOnItsConnection() async throws {
        try await withRedis { redis in
            let subscriber = RedisSubscriber(configuration: redis.configuration, logger: logger)
            let running = Task { await subscriber.run() }
            defer {
                Task {
                    await subscriber.stop(); await running.value
                }
            }
            await subscriber.waitUntilConnected()
            var iterator = subscriber.events.makeAsyncIterator()
            #expect(await iterator.next() == .resubscribing)
            let replies = try await subscriber.send(
                [["SADD", "sb:{u:a}:n", "n1"], ["SPUBLISH", "sb:{u:a}", "right behind"]], after: .subscribe("sb:{u:a}"))
            // The SPUBLISH found the subscription in effect: one receiver.
            #expect(replies == [.integer(1), .integer(1)])
            #expect(await iterator.next() == .message(RedisMessage(channel: "sb:{u:a}", payload: Array("right behind".utf8))))
            #expect(subscriber.channels == ["sb:{u:a}"])
            #expect(try await subscriber.send([["PING"]], after: .subscribe("sb:{u:a}")) == nil, "already subscribed")

            let gone = try await subscriber.send(
                [["SREM", "sb:{u:a}:n", "n1"], ["SPUBLISH", "sb:{u:a}", "after"]], after: .unsubscribe("sb:{u:a}"))
            #expect(gone == [.integer(1), .integer(0)])
            #expect(subscriber.channels.isEmpty)
            #expect(try await subscriber.send([["PING"]], after: .unsubscribe("sb:{u:a}")) == nil, "not subscribed")
            #expect(try await subscriber.send([], after: .subscribe("sb:{u:b}")) == nil, "no commands")
            #expect(subscriber.channels.isEmpty)
        }
    }

    /// With a handler named on its sink, a subscriber hands every event to it on the
    /// connection's event loop, in order, the reconnection's `.resubscribing` included.
    @Test func aSinksHandlerGetsEveryEventOnTheEventLoop() async throws {
        try await withRedis { redis in
            let subscriber = RedisSubscriber(configuration: redis.configuration, logger: logger)
            let seen = Mutex<[(RedisSubscriberEvent, onLoop: Bool)]>([])
            subscriber.sink.deliver(to: { event in
                seen.withLock { $0.append((event, MultiThreadedEventLoopGroup.currentEventLoop != nil)) }
            })
            let publisher = try await RedisConnection.local(port: redis.port)
            let running = Task { await subscriber.run() }
            defer {
                Task {
                    await publisher.close(); await subscriber.stop(); await running.value
                }
            }
            await subscriber.waitUntilConnected()
            try await subscriber.subscribe("sb:{r:sink}")
            for text in ["one", "two"] { try await publisher.send(["SPUBLISH", "sb:{r:sink}", RESPArgument(text)]) }
            try await eventually("both messages handled") { seen.withLock { $0.count } == 3 }
            // The subscription connection is dropped: the handler is told, then gets what follows.
            try await publisher.send(["CLIENT", "KILL", "TYPE", "pubsub"])
            try await eventually("the subscription to be back") {
                (try await publisher.send(["PUBSUB", "SHARDNUMSUB", "sb:{r:sink}"]).elements?.last?.int) == 1
            }
            try await publisher.send(["SPUBLISH", "sb:{r:sink}", "three"])
            try await eventually("the third message handled") { seen.withLock { $0.count } == 5 }
            let events = seen.withLock { $0 }
            let message = { (text: String) in RedisSubscriberEvent.message(RedisMessage(channel: "sb:{r:sink}", payload: Array(text.utf8)))
            }
            #expect(events.map(\.0) == [.resubscribing, message("one"), message("two"), .resubscribing, message("three")])
            let messagesOnLoop = events.filter { $0.0 != .resubscribing }.allSatisfy(\.onLoop)
            #expect(messagesOnLoop, "messages come on the loop")
        }
    }

    @Test func aCommandWithoutAnAnswerTimesOutAndDropsTheConnection() async throws {
        try await withRedis { redis in
            let pauser = try await RedisConnection.local(port: redis.port)
            let slow = try await RedisConnection.local(port: redis.port, commandTimeout: .milliseconds(300))
            defer { Task { await pauser.close() } }
            try await pauser.send(["CLIENT", "PAUSE", "3000", "ALL"])
            // The pause lasts 3 s: an answer would come then, so the throw is the timeout's.
            await #expect(throws: RedisError.timedOut) { try await slow.send(["GET", "x"]) }
            // Replies would now be out of step with commands, so the connection is closed.
            try await eventually("the connection to close") { !slow.channel.isActive }
        }
    }

    @Test func anUnreachableServerIsRetriedWithCappedBackoff() async throws {
        var configuration = RedisClient.Configuration(host: "127.0.0.1", port: try await freePorts(1))
        configuration.minimumBackoff = .milliseconds(100)
        configuration.maximumBackoff = .seconds(2)
        let client = RedisClient(configuration: configuration, logger: logger)
        for attempt in 1...30 {
            let delay = client.backoff(attempt: attempt)
            #expect(delay <= .seconds(2))
            #expect(delay >= .milliseconds(50))
        }
        #expect(client.backoff(attempt: 10) >= .seconds(1))
        let task = Task { await client.run() }
        await #expect(throws: RedisError.unavailable) { try await client.send(["PING"]) }
        await client.stop()
        await task.value
    }
}
