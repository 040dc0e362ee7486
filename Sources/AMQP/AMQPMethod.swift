/// The AMQP 0-9-1 methods a client of ours sends or receives (connection, channel, exchange,
/// queue, basic, confirm), each with its arguments in the specification's order. A method we do
/// not know is `.unknown`: its class and method ids, for an honest error.
public enum AMQPMethod: Equatable, Sendable {
    case connectionStart(versionMajor: UInt8, versionMinor: UInt8, serverProperties: AMQPTable, mechanisms: String, locales: String)
    case connectionStartOk(clientProperties: AMQPTable, mechanism: String, response: [UInt8], locale: String)
    case connectionSecure(challenge: [UInt8])
    case connectionTune(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionTuneOk(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionOpen(virtualHost: String)
    case connectionOpenOk
    case connectionClose(AMQPClose)
    case connectionCloseOk
    case connectionBlocked(reason: String)
    case connectionUnblocked
    case channelOpen
    case channelOpenOk
    case channelClose(AMQPClose)
    case channelCloseOk
    case exchangeDeclare(exchange: String, type: String, passive: Bool, durable: Bool, autoDelete: Bool, arguments: AMQPTable)
    case exchangeDeclareOk
    case queueDeclare(queue: String, passive: Bool, durable: Bool, exclusive: Bool, autoDelete: Bool, arguments: AMQPTable)
    case queueDeclareOk(queue: String, messageCount: UInt32, consumerCount: UInt32)
    case queueBind(queue: String, exchange: String, routingKey: String, arguments: AMQPTable)
    case queueBindOk
    case queueUnbind(queue: String, exchange: String, routingKey: String, arguments: AMQPTable)
    case queueUnbindOk
    case basicQos(prefetchSize: UInt32, prefetchCount: UInt16, global: Bool)
    case basicQosOk
    case basicConsume(queue: String, consumerTag: String, noAck: Bool, exclusive: Bool, arguments: AMQPTable)
    case basicConsumeOk(consumerTag: String)
    case basicPublish(exchange: String, routingKey: String, mandatory: Bool)
    case basicReturn(replyCode: UInt16, replyText: String, exchange: String, routingKey: String)
    case basicDeliver(consumerTag: String, deliveryTag: UInt64, redelivered: Bool, exchange: String, routingKey: String)
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicNack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)
    case confirmSelect
    case confirmSelectOk
    case unknown(classID: UInt16, methodID: UInt16)

    /// `class.method`, for messages.
    public var name: String {
        switch self {
        case .unknown(let classID, let methodID): "method \(classID).\(methodID)"
        default: "\(ids.classID).\(ids.methodID)"
        }
    }

    /// Whether a content header and body follow (basic.publish, basic.deliver, basic.return).
    public var carriesContent: Bool {
        switch self {
        case .basicPublish, .basicDeliver, .basicReturn: true
        default: false
        }
    }

    public var ids: (classID: UInt16, methodID: UInt16) {
        switch self {
        case .connectionStart: (10, 10)
        case .connectionStartOk: (10, 11)
        case .connectionSecure: (10, 20)
        case .connectionTune: (10, 30)
        case .connectionTuneOk: (10, 31)
        case .connectionOpen: (10, 40)
        case .connectionOpenOk: (10, 41)
        case .connectionClose: (10, 50)
        case .connectionCloseOk: (10, 51)
        case .connectionBlocked: (10, 60)
        case .connectionUnblocked: (10, 61)
        case .channelOpen: (20, 10)
        case .channelOpenOk: (20, 11)
        case .channelClose: (20, 40)
        case .channelCloseOk: (20, 41)
        case .exchangeDeclare: (40, 10)
        case .exchangeDeclareOk: (40, 11)
        case .queueDeclare: (50, 10)
        case .queueDeclareOk: (50, 11)
        case .queueBind: (50, 20)
        case .queueBindOk: (50, 21)
        case .queueUnbind: (50, 50)
        case .queueUnbindOk: (50, 51)
        case .basicQos: (60, 10)
        case .basicQosOk: (60, 11)
        case .basicConsume: (60, 20)
        case .basicConsumeOk: (60, 21)
        case .basicPublish: (60, 40)
        case .basicReturn: (60, 50)
        case .basicDeliver: (60, 60)
        case .basicAck: (60, 80)
        case .basicNack: (60, 120)
        case .confirmSelect: (85, 10)
        case .confirmSelectOk: (85, 11)
        case .unknown(let classID, let methodID): (classID, methodID)
        }
    }

    /// Bits packed into one octet, the first in the lowest bit (4.2.5.2).
    static func bits(_ values: Bool...) -> UInt8 {
        values.enumerated().reduce(0) { $0 | ($1.element ? 1 << UInt8($1.offset) : 0) }
    }

    func encoded() -> [UInt8] {
        var out = AMQPWriter()
        out.short(ids.classID)
        out.short(ids.methodID)
        switch self {
        case .connectionStart(let major, let minor, let properties, let mechanisms, let locales):
            out.octet(major)
            out.octet(minor)
            out.table(properties)
            out.longString(mechanisms)
            out.longString(locales)
        case .connectionStartOk(let properties, let mechanism, let response, let locale):
            out.table(properties)
            out.shortString(mechanism)
            out.longBytes(response)
            out.shortString(locale)
        case .connectionSecure(let challenge):
            out.longBytes(challenge)
        case .connectionTune(let channelMax, let frameMax, let heartbeat), .connectionTuneOk(let channelMax, let frameMax, let heartbeat):
            out.short(channelMax)
            out.long(frameMax)
            out.short(heartbeat)
        case .connectionOpen(let virtualHost):
            out.shortString(virtualHost)
            out.shortString("")  // reserved
            out.octet(0)  // reserved bit
        case .connectionOpenOk:
            out.shortString("")  // reserved
        case .connectionClose(let close), .channelClose(let close):
            close.write(to: &out)
        case .connectionBlocked(let reason):
            out.shortString(reason)
        case .channelOpen:
            out.shortString("")
        case .channelOpenOk:
            out.longString("")
        case .exchangeDeclare(let exchange, let type, let passive, let durable, let autoDelete, let arguments):
            out.short(0)
            out.shortString(exchange)
            out.shortString(type)
            out.octet(Self.bits(passive, durable, autoDelete, false, false))
            out.table(arguments)
        case .queueDeclare(let queue, let passive, let durable, let exclusive, let autoDelete, let arguments):
            out.short(0)
            out.shortString(queue)
            out.octet(Self.bits(passive, durable, exclusive, autoDelete, false))
            out.table(arguments)
        case .queueDeclareOk(let queue, let messages, let consumers):
            out.shortString(queue)
            out.long(messages)
            out.long(consumers)
        case .queueBind(let queue, let exchange, let key, let arguments):
            out.short(0)
            out.shortString(queue)
            out.shortString(exchange)
            out.shortString(key)
            out.octet(0)  // no-wait: we wait for bind-ok
            out.table(arguments)
        case .queueUnbind(let queue, let exchange, let key, let arguments):
            out.short(0)
            out.shortString(queue)
            out.shortString(exchange)
            out.shortString(key)
            out.table(arguments)
        case .basicQos(let size, let count, let global):
            out.long(size)
            out.short(count)
            out.octet(Self.bits(global))
        case .basicConsume(let queue, let tag, let noAck, let exclusive, let arguments):
            out.short(0)
            out.shortString(queue)
            out.shortString(tag)
            out.octet(Self.bits(false, noAck, exclusive, false))
            out.table(arguments)
        case .basicConsumeOk(let tag):
            out.shortString(tag)
        case .basicPublish(let exchange, let key, let mandatory):
            out.short(0)
            out.shortString(exchange)
            out.shortString(key)
            out.octet(Self.bits(mandatory, false))
        case .basicReturn(let code, let text, let exchange, let key):
            out.short(code)
            out.shortString(text)
            out.shortString(exchange)
            out.shortString(key)
        case .basicDeliver(let tag, let deliveryTag, let redelivered, let exchange, let key):
            out.shortString(tag)
            out.longlong(deliveryTag)
            out.octet(Self.bits(redelivered))
            out.shortString(exchange)
            out.shortString(key)
        case .basicAck(let tag, let multiple):
            out.longlong(tag)
            out.octet(Self.bits(multiple))
        case .basicNack(let tag, let multiple, let requeue):
            out.longlong(tag)
            out.octet(Self.bits(multiple, requeue))
        case .confirmSelect:
            out.octet(0)  // no-wait: we wait for select-ok
        case .connectionCloseOk, .connectionUnblocked, .channelCloseOk, .exchangeDeclareOk, .queueBindOk, .queueUnbindOk,
            .basicQosOk, .confirmSelectOk, .unknown:
            break
        }
        return out.bytes
    }

    static func read(_ reader: inout AMQPReader) throws(AMQPError) -> AMQPMethod {
        let classID = try reader.short()
        let methodID = try reader.short()
        func bit(_ octet: UInt8, _ index: UInt8) -> Bool { octet & (1 << index) != 0 }
        switch (classID, methodID) {
        case (10, 10):
            return .connectionStart(
                versionMajor: try reader.octet(), versionMinor: try reader.octet(), serverProperties: try reader.table(),
                mechanisms: try reader.longString(), locales: try reader.longString())
        case (10, 11):
            return .connectionStartOk(
                clientProperties: try reader.table(), mechanism: try reader.shortString(), response: try reader.longBytes(),
                locale: try reader.shortString())
        case (10, 20): return .connectionSecure(challenge: try reader.longBytes())
        case (10, 30), (10, 31):
            let (channelMax, frameMax, heartbeat) = (try reader.short(), try reader.long(), try reader.short())
            return methodID == 30
                ? .connectionTune(channelMax: channelMax, frameMax: frameMax, heartbeat: heartbeat)
                : .connectionTuneOk(channelMax: channelMax, frameMax: frameMax, heartbeat: heartbeat)
        case (10, 40):
            let host = try reader.shortString()
            _ = try reader.shortString()
            _ = try reader.octet()
            return .connectionOpen(virtualHost: host)
        case (10, 41):
            _ = try reader.shortString()
            return .connectionOpenOk
        case (10, 50): return .connectionClose(try AMQPClose.read(&reader))
        case (10, 51): return .connectionCloseOk
        case (10, 60): return .connectionBlocked(reason: try reader.shortString())
        case (10, 61): return .connectionUnblocked
        case (20, 10):
            _ = try reader.shortString()
            return .channelOpen
        case (20, 11):
            _ = try reader.longBytes()
            return .channelOpenOk
        case (20, 40): return .channelClose(try AMQPClose.read(&reader))
        case (20, 41): return .channelCloseOk
        case (40, 10):
            _ = try reader.short()
            let (exchange, type, flags) = (try reader.shortString(), try reader.shortString(), try reader.octet())
            return .exchangeDeclare(
                exchange: exchange, type: type, passive: bit(flags, 0), durable: bit(flags, 1), autoDelete: bit(flags, 2),
                arguments: try reader.table())
        case (40, 11): return .exchangeDeclareOk
        case (50, 10):
            _ = try reader.short()
            let (queue, flags) = (try reader.shortString(), try reader.octet())
            return .queueDeclare(
                queue: queue, passive: bit(flags, 0), durable: bit(flags, 1), exclusive: bit(flags, 2), autoDelete: bit(flags, 3),
                arguments: try reader.table())
        case (50, 11):
            return .queueDeclareOk(queue: try reader.shortString(), messageCount: try reader.long(), consumerCount: try reader.long())
        case (50, 20):
            _ = try reader.short()
            let (queue, exchange, key) = (try reader.shortString(), try reader.shortString(), try reader.shortString())
            _ = try reader.octet()
            return .queueBind(queue: queue, exchange: exchange, routingKey: key, arguments: try reader.table())
        case (50, 21): return .queueBindOk
        case (50, 50):
            _ = try reader.short()
            let (queue, exchange, key) = (try reader.shortString(), try reader.shortString(), try reader.shortString())
            return .queueUnbind(queue: queue, exchange: exchange, routingKey: key, arguments: try reader.table())
        case (50, 51): return .queueUnbindOk
        case (60, 10):
            let (size, count, flags) = (try reader.long(), try reader.short(), try reader.octet())
            return .basicQos(prefetchSize: size, prefetchCount: count, global: bit(flags, 0))
        case (60, 11): return .basicQosOk
        case (60, 20):
            _ = try reader.short()
            let (queue, tag, flags) = (try reader.shortString(), try reader.shortString(), try reader.octet())
            return .basicConsume(
                queue: queue, consumerTag: tag, noAck: bit(flags, 1), exclusive: bit(flags, 2), arguments: try reader.table())
        case (60, 21): return .basicConsumeOk(consumerTag: try reader.shortString())
        case (60, 40):
            _ = try reader.short()
            let (exchange, key, flags) = (try reader.shortString(), try reader.shortString(), try reader.octet())
            return .basicPublish(exchange: exchange, routingKey: key, mandatory: bit(flags, 0))
        case (60, 50):
            return .basicReturn(
                replyCode: try reader.short(), replyText: try reader.shortString(), exchange: try reader.shortString(),
                routingKey: try reader.shortString())
        case (60, 60):
            let (tag, deliveryTag, flags) = (try reader.shortString(), try reader.longlong(), try reader.octet())
            return .basicDeliver(
                consumerTag: tag, deliveryTag: deliveryTag, redelivered: bit(flags, 0), exchange: try reader.shortString(),
                routingKey: try reader.shortString())
        case (60, 80):
            let (tag, flags) = (try reader.longlong(), try reader.octet())
            return .basicAck(deliveryTag: tag, multiple: bit(flags, 0))
        case (60, 120):
            let (tag, flags) = (try reader.longlong(), try reader.octet())
            return .basicNack(deliveryTag: tag, multiple: bit(flags, 0), requeue: bit(flags, 1))
        case (85, 10):
            _ = try reader.octet()
            return .confirmSelect
        case (85, 11): return .confirmSelectOk
        default:
            // Its arguments are unknown to us: the frame is taken whole, the method named.
            _ = try reader.take(reader.remaining)
            return .unknown(classID: classID, methodID: methodID)
        }
    }
}

/// The arguments of connection.close and channel.close: why, and which method caused it.
public struct AMQPClose: Equatable, Sendable {
    public var replyCode: UInt16
    public var replyText: String
    public var classID: UInt16
    public var methodID: UInt16

    public init(replyCode: UInt16, replyText: String, classID: UInt16 = 0, methodID: UInt16 = 0) {
        self.replyCode = replyCode
        self.replyText = replyText
        self.classID = classID
        self.methodID = methodID
    }

    func write(to out: inout AMQPWriter) {
        out.short(replyCode)
        out.shortString(replyText)
        out.short(classID)
        out.short(methodID)
    }

    static func read(_ reader: inout AMQPReader) throws(AMQPError) -> AMQPClose {
        AMQPClose(
            replyCode: try reader.short(), replyText: try reader.shortString(), classID: try reader.short(), methodID: try reader.short())
    }
}
