/** Lab component 'ioerr' (placeholder until it lands). */
import type { Component } from './types';

export const component: Component = {
  name: 'ioerr',
  async run() {
    return {};
  },
};
