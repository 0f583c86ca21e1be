/** How many tasks a test agent holds now and held at most: what the server's slots must bound. */
export class Occupancy {
  now = 0
  most = 0
  served = 0
  enter(): void {
    this.now++
    this.most = Math.max(this.most, this.now)
  }
  leave(): void {
    this.now--
    this.served++
  }
}
