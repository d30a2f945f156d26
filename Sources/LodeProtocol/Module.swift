// Module LodeProtocol
