// Module LodeNode
