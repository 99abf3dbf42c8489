/**
 * The optional bearer key. Keys are compared as SHA-256 digests with `crypto.timingSafeEqual`:
 * digests have a fixed length, so neither the comparison time nor an early length check tells an
 * attacker anything about the key.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { M3Error } from '../errors.js';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Reads an API key file: its first line, surrounding whitespace removed (INVALID_ARGUMENT naming the file). */
export function readApiKeyFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new M3Error('INVALID_ARGUMENT', `cannot read the API key file ${path}: ${(e as Error).message}`, { file: path, cause: e });
  }
  const key = text.split(/\r?\n/)[0].trim();
  if (!key) throw new M3Error('INVALID_ARGUMENT', `the API key file ${path} is empty`, { file: path });
  return key;
}

/** Checks `Authorization: Bearer <key>` headers against one key. */
export class BearerKey {
  private readonly expected: Buffer;
  constructor(key: string) {
    if (typeof key !== 'string' || key.length === 0) throw new M3Error('INVALID_ARGUMENT', 'apiKey must be a non-empty string');
    this.expected = digest(key);
  }

  /** Whether an `Authorization` header value carries the key. */
  accepts(header: string | undefined): boolean {
    const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
    // Always hash and compare, so a missing header takes the same time as a wrong key.
    const given = digest(m ? m[1].trim() : '');
    return timingSafeEqual(given, this.expected) && m !== null;
  }
}
