import Foundation
import Logging
import SwitchboardProtocol

/// `--log-format json`: one JSON object per line on standard error, for log collectors:
/// `{"ts":"2026-12-01T21:00:00.000Z","level":"info","label":"switchboard","message":"...",
/// "node":"n1",...}`. Metadata fields sit beside the fixed ones (a field named like one of them
/// is written under `meta.` instead); nested values are written as their text.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    static let fixed: Set<String> = ["ts", "level", "label", "message", "source"]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        var out = JSONWriter(capacity: 256)
        out.raw("{\"ts\":")
        out.string(Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        out.raw(",\"level\":")
        out.string(event.level.rawValue)
        out.raw(",\"label\":")
        out.string(label)
        out.raw(",\"message\":")
        out.string(event.message.description)
        for key in fields.keys.sorted() {
            out.raw(",")
            out.string(Self.fixed.contains(key) ? "meta." + key : key)
            out.raw(":")
            out.string(Self.text(fields[key]!))
        }
        out.raw("}\n")
        FileHandle.standardError.write(Data(out.bytes))
    }

    static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let value): value.description
        default: value.description
        }
    }
}
