/** Clients of a `bgem3 serve` server. */
export { RemoteEncoder, type RemoteEncoderOptions } from './remote-encoder.js';
