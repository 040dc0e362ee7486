import AMQP
import Logging
import NIOCore
import SwitchboardTesting
import Synchronization
import Testing

/// Our AMQP client against a real, private rabbitmq-server: the handshake, declares and binds,
/// confirmed publishes, deliveries (one spanning several frames), the broker's refusals, and a
/// broker that dies. One broker for the whole suite's checks: it takes seconds to start.
@Suite(.serialized) struct AMQPClientTests {
    static let logger = Logger(label: "amqp-test")

    @Test func aConfirmedChannelOnARealBroker() async throws {
        try await withRabbitMQ { broker in
            let address = try #require(AMQPAddress(url: broker.url))
            let received = Mutex<[AMQPDelivery]>([])
            let connection = try await AMQPConnection.connect(
                to: address, logger: Self.logger, onDelivery: { delivery in received.withLock { $0.append(delivery) } })
            try await connection.call(
                .exchangeDeclare(exchange: "sb-test", type: "topic", passive: false, durable: false, autoDelete: false, arguments: [:]))
            let declared = try await connection.call(
                .queueDeclare(queue: "", passive: false, durable: false, exclusive: true, autoDelete: true, arguments: [:]))
            guard case .queueDeclareOk(let queue, _, _) = declared else {
                Issue.record("queue.declare answered \(declared)")
                return
            }
            #expect(queue.hasPrefix("amq.gen-"))
            for key in ["r.lobby", "r.barrier"] {
                #expect(
                    try await connection.call(.queueBind(queue: queue, exchange: "sb-test", routingKey: key, arguments: [:]))
                        == .queueBindOk)
            }
            #expect(try await connection.call(.basicQos(prefetchSize: 0, prefetchCount: 1000, global: false)) == .basicQosOk)
            #expect(
                try await connection.call(.basicConsume(queue: queue, consumerTag: "t1", noAck: true, exclusive: true, arguments: [:]))
                    == .basicConsumeOk(consumerTag: "t1"))

            // Confirmed publishes; only bound keys are delivered; a body over frame-max in pieces.
            try await connection.publish(
                exchange: "sb-test", routingKey: "r.lobby", body: Array(#"{"n":1}"#.utf8),
                properties: AMQPProperties(contentType: "application/json", headers: ["sb-from": .string(Array("alice".utf8))]))
            try await connection.publish(exchange: "sb-test", routingKey: "r.nobody", body: [2])
            let big = (0..<300_000).map { UInt8(truncatingIfNeeded: $0) }
            try await connection.publish(exchange: "sb-test", routingKey: "r.lobby", body: big)
            try await eventually("two deliveries") { received.withLock { $0.count } == 2 }
            let first = received.withLock { $0[0] }
            #expect(first.routingKey == "r.lobby" && first.exchange == "sb-test" && first.body == Array(#"{"n":1}"#.utf8))
            #expect(first.properties.contentType == "application/json")
            #expect(first.properties.headers?["sb-from"] == .string(Array("alice".utf8)))
            #expect(received.withLock { $0[1].body } == big)

            // Pipelined publishes are confirmed in order; after an unbind, the key is not delivered.
            let futures = (0..<200).map { connection.enqueuePublish(exchange: "sb-test", routingKey: "r.lobby", body: [UInt8($0 % 256)]) }
            for future in futures { try await future.get() }
            #expect(
                try await connection.call(.queueUnbind(queue: queue, exchange: "sb-test", routingKey: "r.lobby", arguments: [:]))
                    == .queueUnbindOk)
            try await connection.publish(exchange: "sb-test", routingKey: "r.lobby", body: [9, 9])
            try await connection.publish(exchange: "sb-test", routingKey: "r.barrier", body: [7])
            try await eventually("the barrier") { received.withLock { $0.last?.routingKey == "r.barrier" } }
            #expect(received.withLock { $0.count } == 2 + 200 + 1, "nothing after the unbind but the barrier")

            // The broker refuses a declare that contradicts the exchange: the connection ends, named.
            do {
                _ = try await connection.call(
                    .exchangeDeclare(exchange: "sb-test", type: "fanout", passive: false, durable: false, autoDelete: false, arguments: [:])
                )
                Issue.record("a contradicting declare was accepted")
            } catch let error as AMQPConnectionError {
                guard case .closedByBroker(406, let text) = error else {
                    Issue.record("refused with \(error)")
                    return
                }
                #expect(text.contains("PRECONDITION_FAILED"))
            }
            try await eventually("the connection to close") { !connection.channel.isActive }
            await #expect(throws: AMQPConnectionError.connectionClosed) {
                try await connection.publish(exchange: "sb-test", routingKey: "r.lobby", body: [1])
            }

            // A wrong password is refused by the broker, with its reason.
            var wrong = address
            wrong.password = "nope"
            do {
                _ = try await AMQPConnection.connect(to: wrong, logger: Self.logger)
                Issue.record("a wrong password was accepted")
            } catch let error as AMQPConnectionError {
                guard case .closedByBroker(403, let text) = error else {
                    Issue.record("refused with \(error)")
                    return
                }
                #expect(text.contains("ACCESS_REFUSED"))
            }

            // A broker that dies: the connection closes and what waits fails.
            let survivor = try await AMQPConnection.connect(to: address, heartbeatSeconds: 2, logger: Self.logger)
            try await broker.kill9()
            try await eventually("the connection to notice", timeout: .seconds(15)) { !survivor.channel.isActive }
            await #expect(throws: AMQPConnectionError.connectionClosed) {
                try await survivor.publish(exchange: "sb-test", routingKey: "r.lobby", body: [1])
            }
        }
    }

    /// A broker that is not there: connect throws at once, nothing is left pending.
    @Test func noBrokerIsAnErrorNotAHang() async throws {
        let port = try await freePorts(1)
        await #expect(throws: (any Error).self) {
            _ = try await AMQPConnection.connect(to: AMQPAddress(host: "127.0.0.1", port: port), logger: Self.logger)
        }
    }

    @Test func addressesParse() {
        #expect(
            AMQPAddress(url: "amqp://u:p@h:5673/v%2Fx") == AMQPAddress(host: "h", port: 5673, user: "u", password: "p", virtualHost: "v/x"))
        #expect(AMQPAddress(url: "amqp://h") == AMQPAddress(host: "h"))
        #expect(AMQPAddress(url: "amqp://h:0") == nil)
        #expect(AMQPAddress(url: "amqp://h/%zz") == nil)
        #expect(AMQPAddress(url: "http://h") == nil)
        #expect(AMQPAddress(url: "amqp://u@h:1/")?.password == "")
    }
}
