/** An error caused by the user's input or arguments: the CLI prints its message alone, no stack. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
