import LodeCore

/// Where a peer is in its connection, as `lode status` shows it.
public enum PeerState: String, Codable, Sendable, CaseIterable {
    /// This node dialled it and a session runs.
    case connected
    /// It dialled this node and a session runs.
    case accepted
    /// TCP is up; the TLS handshake or the Hellos are not done.
    case handshake
    /// Dialling.
    case connecting
    /// Waiting before the next dial, after a failure.
    case backoff
    /// Not dialled: the node is offline.
    case offline

    /// True when a session runs.
    public var isConnected: Bool { self == .connected || self == .accepted }
}

/// How far apart a node and a peer are in one dataset, in commits.
public struct Lag: Codable, Hashable, Sendable {
    /// Commits this node holds that the peer lacks.
    public var ahead: UInt64
    /// Commits the peer holds that this node lacks.
    public var behind: UInt64

    /// Creates a lag.
    public init(ahead: UInt64, behind: UInt64) {
        self.ahead = ahead
        self.behind = behind
    }

    /// The lag between what this node holds (`local`) and what a peer
    /// holds (`peer`): the commits of each feed one has beyond the other,
    /// summed (saturating: a peer's vector can be anything).
    public init(local: VersionVector, peer: VersionVector) {
        var ahead: UInt64 = 0
        var behind: UInt64 = 0
        // Every site either side names (the merge's entries).
        for e in local.merged(with: peer).sorted {
            let l = local[e.site], p = peer[e.site]
            if l > p {
                let (sum, overflow) = ahead.addingReportingOverflow(l - p)
                ahead = overflow ? .max : sum
            } else {
                let (sum, overflow) = behind.addingReportingOverflow(p - l)
                behind = overflow ? .max : sum
            }
        }
        self.init(ahead: ahead, behind: behind)
    }

    /// True when neither side lacks anything.
    public var isZero: Bool { ahead == 0 && behind == 0 }
}

/// A peer's address, `HOST:PORT` (an IPv6 host in brackets).
///
/// ```swift
/// let a = try PeerAddress("127.0.0.1:7443")
/// a.host // "127.0.0.1"
/// ```
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    /// The host (brackets removed).
    public let host: String
    /// The port.
    public let port: Int

    /// Why an address is refused.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        /// What is wrong, for a person to read.
        public let message: String
        public var description: String { message }
    }

    /// Parses `HOST:PORT`: a host name or IPv4 address (letters, digits,
    /// `.` and `-`, starting with a letter or digit), or an IPv6 address in
    /// brackets, and a port from 1 to 65535 (the rule
    /// `Protocol/client-api.yaml` states as a pattern). Port 0 (any free
    /// port) is allowed only where a node listens (`allowZero`).
    public init(_ s: String, allowZero: Bool = false) throws(Invalid) {
        let invalid = Invalid(
            message: "\"\(s)\" is not HOST:PORT (a host name, an IPv4 address or an IPv6 address in brackets, and a port from 1 to 65535)")
        guard let colon = s.lastIndex(of: ":") else { throw invalid }
        var host = String(s[..<colon])
        let portText = s[s.index(after: colon)...]
        if host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2 {
            host = String(host.dropFirst().dropLast())
            guard host.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || $0 == ":" || $0 == "." }) else { throw invalid }
        } else {
            func isNameCharacter(_ c: Unicode.Scalar) -> Bool {
                c.isASCII && (c.properties.isAlphabetic || c.properties.numericType != nil || c == "." || c == "-")
            }
            guard let first = host.unicodeScalars.first, first != ".", first != "-", host.unicodeScalars.allSatisfy(isNameCharacter) else {
                throw invalid
            }
        }
        guard !portText.isEmpty, portText.allSatisfy({ ("0"..."9").contains($0) }), portText.first != "0" || portText == "0",
            let port = Int(portText),
            ((allowZero ? 0 : 1)...65535).contains(port)
        else { throw invalid }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
